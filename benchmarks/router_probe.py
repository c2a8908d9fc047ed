"""Do the task routers part the tasks, and do their units die? (docs/DIAGNOSIS.md, "The routers die")

Trains MTU N=4, G=1/4 on the toy world's four tasks (the shipped recipe's settings: `toyworld_train_config`) and
counts, every 25 steps, the router hidden units whose pre-activation is positive for at least one task (summed over
the layers: 448 = 7 x 64 on the toy base) and the spread of the tasks' expert weights (the largest difference of
any task's weight from the tasks' mean). One change at a time:

    python benchmarks/router_probe.py --lr 2e-3 --steps 400 --out OUT                       # the paper's ReLU router
    python benchmarks/router_probe.py --lr 2e-3 --router-lr 1e-4 --steps 400 --out OUT      # slower routers
    python benchmarks/router_probe.py --lr 2e-3 --leaky-slope 0.01 --steps 400 --out OUT    # leaky ReLU (not the paper's)
    python benchmarks/router_probe.py --lr 2e-3 --freeze-task-norms --steps 400 --out OUT   # task LayerNorms kept shared

Prints one line per census and writes OUT/census.json. `--leaky-slope` and `--freeze-task-norms` change the model
for this probe only (a patched router forward; the task LayerNorms' affines left out of training, so they stay the
base's shared `norm3`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def census(model) -> tuple[int, float]:
    """(router units positive for at least one task, largest |task weight - mean over tasks|) over the layers."""
    alive, spread = 0, 0.0
    with torch.no_grad():
        embeddings = model.task_embeddings
        for _, module in model.mtu_modules():
            router = getattr(module, "router", None)
            if router is None:
                continue
            alive += int(((router.hidden(embeddings) > 0).sum(0) > 0).sum())
            weights = router(embeddings)
            spread = max(spread, float((weights - weights.mean(0)).abs().max()))
    return alive, spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--router-lr", type=float, default=None, help="routers' and task embeddings' lr (default --lr)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--leaky-slope", type=float, default=0.0, help="0: the paper's ReLU")
    parser.add_argument("--freeze-task-norms", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from mtu.toyworld.evaluate import TASKS
    from mtu.toyworld.experiment import toyworld_train_config
    from mtu.training.trainer import Trainer
    from mtu.upcycling.router import TaskRouter

    if args.leaky_slope:
        def leaky_forward(self, task_embeddings):
            return torch.softmax(self.out(F.leaky_relu(self.hidden(task_embeddings), args.leaky_slope)), dim=-1)

        TaskRouter.forward = leaky_forward
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = toyworld_train_config("toyworld-base", str(out / "run"), TASKS, mtu={"num_experts": 4},
                                   steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                   log_with="none")
    config.optim.router_lr = args.router_lr
    trainer = Trainer(config, overwrite=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if args.freeze_task_norms:
        for name, parameter in model.named_parameters():
            if name.endswith(("ln_weight", "ln_bias")):
                parameter.requires_grad_(False)  # no gradient: Adam leaves them at the shared norm3 values
    rows, start = [], time.time()
    for step in range(args.steps + 1):
        if step % 25 == 0:
            alive, spread = census(model)
            rows.append({"step": step, "alive": alive, "spread": round(spread, 4),
                         "seconds": round(time.time() - start)})
            print(rows[-1], flush=True)
        if step < args.steps:
            trainer.train_step()
    (out / "census.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
