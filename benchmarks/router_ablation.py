"""Usage: python benchmarks/router_ablation.py RUN/checkpoints/checkpoint-N COUNT edit,inpaint,sr,t2i

Does the trained routing do work yet? One checkpoint, each task's 64 validation examples sampled twice with the
same seeds: with the trained routers, and with every layer's expert weights replaced by their mean over the tasks
(one shared mixture; task LayerNorms and input convs untouched). Paired: McNemar for success rates, a paired
bootstrap for PSNR."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # checkpoint_progress, beside this file
from checkpoint_progress import MAIN, SAMPLING  # noqa: E402
from mtu.stats import mcnemar_p_value, paired_difference  # noqa: E402
from mtu.toyworld.evaluate import evaluation_set, generate_outputs, score_examples  # noqa: E402
from mtu.toyworld.experiment import pipeline_for  # noqa: E402
from mtu.training.export import checkpoint_run_config, model_from_checkpoint  # noqa: E402
from mtu.upcycling.router import TaskRouter  # noqa: E402

folder, count = sys.argv[1], int(sys.argv[2])
pipe = pipeline_for(model_from_checkpoint(folder), checkpoint_run_config(folder).model.base)
trained = TaskRouter.forward
def shared(self, task_embeddings):
    weights = trained(self, task_embeddings)
    return weights.mean(0, keepdim=True).expand_as(weights)
for task in sys.argv[3].split(","):
    examples = evaluation_set(task, count, split="validation")
    per = {}
    for name, forward in (("trained", trained), ("shared", shared)):
        TaskRouter.forward = forward
        with torch.no_grad():
            outputs = generate_outputs(pipe, examples, 0, **SAMPLING[task])
        per[name] = score_examples(examples, outputs, 0)
    TaskRouter.forward = trained
    key = MAIN[task]
    first, second = per["trained"]["main"], per["shared"]["main"]
    values = {name: round(s["summary"][key]["value"], 4) for name, s in per.items()}
    if isinstance(first[0], bool):
        only_a = sum(a and not b for a, b in zip(first, second))
        only_b = sum(b and not a for a, b in zip(first, second))
        test = f"trained only {only_a}, shared only {only_b}, McNemar p {mcnemar_p_value(only_a, only_b):.3f}"
    else:
        diff = paired_difference(first, second)
        test = f"paired difference {diff}"
    identical = sum(float(a) == float(b) for a, b in zip(first, second))
    print(f"{task} {key} {values}; {test}; identical per-example scores {identical}/{len(first)}", flush=True)
