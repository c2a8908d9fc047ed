"""Quality on the toy world: analogues of the paper's Tables 2-5, every row with the same data, steps, batch,
learning rate and seeds, scored by the oracle on the same held-out examples.

    python benchmarks/toyworld_quality.py [--steps 1600] [--batch-size 16] [--lr 2e-3] [--seeds 0,1]
                                          [--eval-count 32] [--tune-count 32] [--rows ROW,ROW,...]
                                          [--out runs/quality]

Rows (`--rows`, default all):
  base            the shipped base model, text-to-image only (Table 2, first row)
  single:TASK     full fine-tuning of the base on one task (Table 2: one model per task)
  mtu-n4          MTU N=4, G=1/4 on all four tasks (Table 2: one model for all)
  lora, ia3       LoRA on the FFN layers with its rank chosen so its trainable parameters match MTU N=4's; IA3
                  on the whole block (attention and FFN), as the paper does because FFN-only IA3 did not train;
                  all four tasks, task input convs (Table 3)
  mtu-n1, mtu-n2, mtu-n8, mtu-top4of8     N in {1, 2, 8} with G=1/N, and top-k 4 of 8 (Table 4)
  mtu-n4-shard    the paper's plain shard init instead of our `preserve` init (our own row)

Every trained row's edit and inpaint guidance is chosen the same way, on `--tune-count` validation examples
(training-split scenes; never the held-out ones), as the demo does (`experiment.choose_guidance`).

Each cell is the mean over seeds, +- the standard deviation when there are several. Main metrics: t2i caption
faithfulness, edit success, sr PSNR (dB), inpaint success (removed and the rest preserved). Also written as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mtu.toyworld.components import shipped_base  # noqa: E402
from mtu.toyworld.evaluate import MAIN_METRIC, TASKS, evaluation_set  # noqa: E402
from mtu.toyworld.experiment import score_base, toyworld_train_config, train_and_score  # noqa: E402

ROWS = {
    "base": None,
    **{f"single:{task}": {"method": "full", "tasks": (task,)} for task in TASKS},
    "mtu-n4": {"method": "mtu", "mtu": {"num_experts": 4}},
    "lora": {"method": "lora"},
    "ia3": {"method": "ia3", "model": {"ia3_on_attention": True}},
    "mtu-n1": {"method": "mtu", "mtu": {"num_experts": 1}},
    "mtu-n2": {"method": "mtu", "mtu": {"num_experts": 2}},
    "mtu-n8": {"method": "mtu", "mtu": {"num_experts": 8}},
    "mtu-top4of8": {"method": "mtu", "mtu": {"num_experts": 8, "top_k": 4}},
    "mtu-n4-shard": {"method": "mtu", "mtu": {"num_experts": 4, "init": "shard"}},
}


def matched_lora_rank(base: str, tasks=TASKS, mtu: dict | None = None) -> tuple[int, int]:
    """(LoRA rank whose trainable parameters come closest to MTU's, MTU's trainable count)."""
    from mtu.training.config import ModelConfig
    from mtu.training.methods import build_model, trainable_parameters
    from mtu.upcycling import load_base_unet

    def count(config):
        return sum(p.numel() for p in trainable_parameters(build_model(load_base_unet(base), config, list(tasks))).values())

    target = count(ModelConfig(base=base, method="mtu", mtu=mtu or {"num_experts": 4}))
    one, two = count(ModelConfig(base=base, method="lora", lora_rank=1)), count(ModelConfig(base=base, method="lora",
                                                                                             lora_rank=2))
    per_rank = two - one
    return max(1, round((target - (one - per_rank)) / per_rank)), target


def run_row(name: str, spec, base: str, args, seed: int, examples: dict, lora_rank: int) -> dict:
    if spec is None:  # the base model itself
        scores, _ = score_base(base, examples["t2i"], seed)
        return {"scores": {"t2i": scores}, "trainable": 0}
    tasks = spec.get("tasks", TASKS)
    extra = {"lora_rank": lora_rank} if spec["method"] == "lora" else dict(spec.get("model", {}))
    config = toyworld_train_config(base, Path(args.out) / f"{name.replace(':', '-')}-seed{seed}", tasks,
                                   method=spec["method"], mtu=spec.get("mtu"), steps=args.steps,
                                   batch_size=args.batch_size, lr=args.lr, seed=seed, log_with="none", **extra)
    result = train_and_score(config, examples, seed, tune_guidance=args.tune_count)
    return {"scores": result["scores"], "trainable": result["trainable"],
            "guidance": {task: value["chosen"] for task, value in result["guidance"].items()}}


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} +- {statistics.stdev(values):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--tune-count", type=int, default=32,
                        help="validation examples for choosing edit/inpaint guidance (0: paper defaults)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--eval-count", type=int, default=32)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--base", default=None, help="base pipeline folder (default: the shipped toy-world base)")
    parser.add_argument("--out", default="runs/quality")
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        parser.error(f"unknown --rows {unknown}; known: {', '.join(ROWS)}")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    base = args.base or str(shipped_base())
    examples = {task: evaluation_set(task, args.eval_count) for task in TASKS}
    lora_rank, mtu_trainable = matched_lora_rank(base)
    print(f"base {base}; {args.steps} steps x batch {args.batch_size}, lr {args.lr}, seeds {seeds}, "
          f"{args.eval_count} held-out examples per task; LoRA rank {lora_rank} (MTU N=4 trains {mtu_trainable:,})",
          flush=True)
    results: dict[str, list[dict]] = {}
    for name in rows:
        for seed in seeds:
            start = time.perf_counter()
            results.setdefault(name, []).append(run_row(name, ROWS[name], base, args, seed, examples, lora_rank))
            print(f"  {name} seed {seed}: {time.perf_counter() - start:.0f} s "
                  f"{json.dumps(results[name][-1]['scores'])} guidance {results[name][-1].get('guidance')}",
                  file=sys.stderr, flush=True)
    header = "| row | trainable | " + " | ".join(f"{task} {MAIN_METRIC[task]}" for task in TASKS) + " |"
    print("\n" + header + "\n|" + "---|" * (len(TASKS) + 2))
    for name, runs in results.items():
        cells = [_cell([run["scores"][task][MAIN_METRIC[task]] for run in runs if task in run["scores"]])
                 for task in TASKS]
        print(f"| {name} | {runs[0]['trainable']:,} | " + " | ".join(cells) + " |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "quality.json").write_text(json.dumps({"args": vars(args), "lora_rank": lora_rank,
                                                             "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
