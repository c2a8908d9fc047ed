"""What `mtu demo`'s guidance choice buys its live model on held-out examples (issue 11, point 5).

The demo chooses edit's and inpaint's (text, image) guidance on `tune_count` validation examples (6 pairs each,
`experiment.choose_guidance`): a fifth of its time (docs/BENCHMARKS.md, "Where `mtu demo`'s minutes go"). This
trains the demo's own model (`DemoConfig`'s defaults: steps, batch, lr, seed, experts), makes the same choice, and
scores `--count` held-out examples per task with the chosen pair and with the paper's defaults (Appendix A.2), paired
on the same examples and noise: is the choice worth its minutes?

    OMP_NUM_THREADS=1 python benchmarks/demo_guidance.py --run RUN_DIR [--count 256]

`--run`: the training's run folder; when RUN_DIR/final exists its model is used and nothing is trained (a second
call re-scores the same model). The choice is made on validation examples only; the held-out ones are scored once per
setting and choose nothing.
"""
import argparse
import sys
from pathlib import Path

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder (trained into, or reused when it has final/)")
    parser.add_argument("--count", type=int, default=256, help="held-out examples per task (default 256)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count {args.count}: must be 1 or more")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps {args.steps}: must be 1 or more")

    from mtu.demo import DemoConfig
    from mtu.pipelines import MTUPipeline
    from mtu.stats import paired_difference
    from mtu.toyworld.components import shipped_base
    from mtu.toyworld.evaluate import MAIN_METRIC, evaluation_set, generate_outputs, score_examples
    from mtu.toyworld.experiment import choose_guidance, toyworld_train_config
    from mtu.toyworld.metrics import paired_cells
    from mtu.toyworld.tasks import TASKS
    from mtu.training.trainer import Trainer

    demo, base = DemoConfig(), str(shipped_base())
    final = Path(args.run) / "final"
    if not final.is_dir():
        config = toyworld_train_config(base, args.run, TASKS, mtu={"num_experts": demo.num_experts},
                                       steps=args.steps or demo.steps, batch_size=demo.batch_size, lr=demo.lr,
                                       seed=demo.seed, log_with="none")
        torch.manual_seed(demo.seed)
        Trainer(config).train()  # writes final/ (the EMA weights, as the demo scores)
    pipe = MTUPipeline.from_pretrained(str(final))
    pipe.set_progress_bar_config(disable=True)

    print(f"model: {final} (the demo's recipe); guidance chosen on {demo.tune_count} validation examples; "
          f"{args.count} held-out examples per task\n")
    print("| task | guidance (text / image) | main metric (95% CI) | preserved | vs the chosen pair (95% CI) | "
          "only this / only chosen | McNemar p |")
    print("|---|---|---|---:|---|---|---:|")
    for task in ("edit", "inpaint"):
        chosen, _ = choose_guidance(pipe, task, demo.tune_count, demo.seed)
        defaults = pipe.task_defaults(task)
        paper = {"guidance_scale": defaults.guidance_scale, "image_guidance_scale": defaults.image_guidance_scale}
        examples = evaluation_set(task, args.count)
        scored = {}
        for name, kwargs in (("chosen", chosen), ("paper", paper)):
            with torch.no_grad():
                scored[name] = score_examples(examples, generate_outputs(pipe, examples, demo.seed, **kwargs),
                                              demo.seed)
            summary = scored[name]["summary"]
            main = summary[MAIN_METRIC[task]]
            preserved = summary.get("preserved", {}).get("value", float("nan"))
            versus = ("- | - | -" if name == "chosen" else
                      paired_cells(paired_difference(scored[name]["main"], scored["chosen"]["main"])))
            same = " (= chosen)" if name == "paper" and kwargs == chosen else ""
            print(f"| {task} | {name}: {kwargs['guidance_scale']} / {kwargs['image_guidance_scale']}{same} | "
                  f"{main['value']:.3f} ({main['low']:.3f}-{main['high']:.3f}) | {preserved:.3f} | {versus} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
