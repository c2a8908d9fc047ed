"""Where `mtu demo`'s minutes go: each part of its stage 2 run at a reduced count, timed, and scaled to the demo's
own counts (`DemoConfig`'s defaults), printed as a table.

    OMP_NUM_THREADS=1 python benchmarks/demo_time.py [--steps 100] [--count 32]

Parts: drawing the training scenes and building the trainer; `--steps` optimizer steps of the demo's batch (scaled
to `DemoConfig.steps`); generating and scoring `--count` held-out examples per task (scaled to `eval_count`);
choosing edit's guidance on `--count` validation examples (scaled to `tune_count` examples of edit and inpaint,
which try the same grid; 32 where the demo's default, 0, uses its recipe's pairs instead: then outside the total).
The model is the demo's after `--steps` steps: sampling costs the same whatever its weights. Run it on a quiet
machine, or compare its rows as shares: they are timed in one run, side by side.
"""
import argparse
import tempfile
import time

import torch

from mtu.demo import DEMO_TUNE_COUNT, DemoConfig
from mtu.toyworld.components import shipped_base
from mtu.toyworld.evaluate import evaluation_set, generate_outputs, score
from mtu.toyworld.experiment import choose_guidance, pipeline_for, toyworld_train_config
from mtu.toyworld.tasks import TASKS
from mtu.training.trainer import Trainer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="training steps timed (default 100)")
    parser.add_argument("--count", type=int, default=32, help="examples per task timed (default 32)")
    args = parser.parse_args(argv)
    for name in ("steps", "count"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    demo, base = DemoConfig(), str(shipped_base())
    rows = []  # (part, measured at, seconds, scaled to, scaled seconds)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        config = toyworld_train_config(base, f"{folder}/run", TASKS, mtu={"num_experts": demo.num_experts},
                                       steps=args.steps, batch_size=demo.batch_size, lr=demo.lr, seed=demo.seed)
        trainer = Trainer(config)
        seconds = time.perf_counter() - start
        rows.append(("scenes and trainer", "-", seconds, "-", seconds))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        rows.append(("training", f"{args.steps} steps", seconds, f"{demo.steps} steps",
                     seconds / args.steps * demo.steps))
        model = trainer.trained_model(ema=True)
    pipe = pipeline_for(model, base)
    for task in TASKS:
        examples = evaluation_set(task, args.count)
        start = time.perf_counter()
        score(examples, generate_outputs(pipe, examples, demo.seed))
        seconds = time.perf_counter() - start
        rows.append((f"held-out {task}", f"{args.count}", seconds, f"{demo.eval_count}",
                     seconds / args.count * demo.eval_count))
    start = time.perf_counter()
    _, tried = choose_guidance(pipe, "edit", args.count, demo.seed)
    seconds = time.perf_counter() - start
    # Since 2026-12-03 the default demo uses the pairs this choice makes for its recipe (`DEMO_GUIDANCE`) and chooses
    # again only with --tune-count: then the row is the cost of `--tune-count DEMO_TUNE_COUNT`, outside the total.
    tune = demo.tune_count or DEMO_TUNE_COUNT
    choice = (f"guidance choice ({len(tried)} pairs)" + ("" if demo.tune_count else f", only with --tune-count {tune}"),
              f"edit, {args.count}", seconds, f"edit + inpaint, {tune}", seconds / args.count * tune * 2)
    if demo.tune_count:
        rows.append(choice)

    total = sum(row[4] for row in rows)

    def line(part, at, seconds, scaled_to, scaled, share: str) -> str:
        return f"| {part} | {at} | {seconds:.1f} | {scaled_to} | {scaled:.0f} | {share} |"

    print(f"torch threads {torch.get_num_threads()}; the demo's stage 2 at its own counts, estimated\n")
    print("| part | timed at | seconds | demo's count | demo's seconds (est.) | share |")
    print("|---|---|---:|---|---:|---:|")
    for row in rows:
        print(line(*row, f"{row[4] / total:.0%}"))
    print(f"| total | | | | {total:.0f} | |")
    if not demo.tune_count:  # after the total, which it is not part of
        print(line(*choice, "-"))


if __name__ == "__main__":
    main()
