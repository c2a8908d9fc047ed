"""Quality on the toy world: analogues of the paper's Tables 2-5, every row with the same data, steps, batch,
learning rate and seeds, scored by the oracle on the same held-out examples.

    python benchmarks/toyworld_quality.py [--steps 1600] [--batch-size 16] [--lr 2e-3] [--full-lr 2e-4] [--seeds 0,1]
                                          [--eval-count 32] [--tune-count 32] [--rows ROW,ROW,...]
                                          [--budget per-row|per-task] [--out runs/quality]
    python benchmarks/toyworld_quality.py --merge runs/a/quality.json,runs/b/quality.json [--rows ROW,...]

Rows (`--rows`, default all):
  base            the shipped base model, text-to-image only (Table 2, first row)
  single:TASK     full fine-tuning of the base on one task (Table 2: one model per task), at `--full-lr`: all
                  4.2M weights move, and at the shared 2e-3 full fine-tuning fell below the base on t2i (0.594 vs
                  0.719, seed 0), which would make a straw man of the single-task rows
  mtu-n4          MTU N=4, G=1/4 on all four tasks (Table 2: one model for all)
  lora, ia3       LoRA on the FFN layers with its rank chosen so its trainable parameters match MTU N=4's; IA3
                  on the whole block (attention and FFN), as the paper does because FFN-only IA3 did not train;
                  all four tasks, task input convs (Table 3)
  mtu-n1, mtu-n2, mtu-n8, mtu-top4of8     N in {1, 2, 8} with G=1/N, and top-k 4 of 8 (Table 4)
  mtu-n4-shard    the paper's plain shard init instead of our `preserve` init (our own row)
Diagnostic rows (only when named): mtu-n4-alone:TASK (MTU N=4 trained on that task alone: the same trainable parts
  as mtu-n4 with all the batch on one task, like single:TASK) and full-all (one full fine-tune on all four tasks,
  at `--full-lr`), to tell a gap from sharing one model among tasks apart from a gap from training fewer weights;
  mtu-n4-sr2, lora-sr2, ia3-sr2 (those rows with sr drawn twice as often as each other task: 2/5 of the samples
  instead of 1/4, each sample's task drawn at random).

Budget (`--budget`): `per-row` (default, CPU-sized) trains every row `--steps` steps, so a row on four tasks sees
each task a quarter as often as a single-task row; `per-task` is the paper's budget (A.2: single-task and MTU models
alike train 100 epochs, i.e. every task's data as often in both), so a row on k tasks trains k x `--steps` steps.
The two agree on base and single-task rows.
Every trained row's edit and inpaint guidance is chosen the same way, on `--tune-count` validation examples
(training-split scenes; never the held-out ones), as the demo does (`experiment.choose_guidance`).

Each cell is the mean over seeds, +- the standard deviation when there are several. Main metrics: t2i caption
faithfulness, edit success, sr PSNR (dB), inpaint success (removed and the rest preserved). The JSON (`--out`) is
rewritten after every run; `--merge` joins runs made at different times (same budget) into one table, and says how
MTU N=4 stands against the issue's target.
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
from mtu.upcycling.serialization import atomic_write_text  # noqa: E402

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
# Not in the paper's tables (not run unless named): where a gap between MTU and the single-task rows comes from.
DIAGNOSTIC_ROWS = {
    **{f"mtu-n4-alone:{task}": {"method": "mtu", "mtu": {"num_experts": 4}, "tasks": (task,)} for task in TASKS},
    "full-all": {"method": "full"},
    "mtu-n4-sr2": {"method": "mtu", "mtu": {"num_experts": 4}, "task_weights": {"sr": 2.0}},
    "lora-sr2": {"method": "lora", "task_weights": {"sr": 2.0}},
    "ia3-sr2": {"method": "ia3", "model": {"ia3_on_attention": True}, "task_weights": {"sr": 2.0}},
}
ALL_ROWS = ROWS | DIAGNOSTIC_ROWS


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


def row_tasks(name: str) -> tuple:
    """The tasks a row trains on (none for the base)."""
    spec = ALL_ROWS[name]
    return () if spec is None else tuple(spec.get("tasks", TASKS))


def row_steps(name: str, steps: int, budget: str) -> int:
    """Training steps of a row: `steps` each (`per-row`), or `steps` per task it trains on (`per-task`)."""
    return steps * max(1, len(row_tasks(name))) if budget == "per-task" else steps


def run_row(name: str, spec, base: str, args, seed: int, examples: dict, lora_rank: int) -> dict:
    if spec is None:  # the base model itself
        scores, _ = score_base(base, examples["t2i"], seed)
        return {"scores": {"t2i": scores}, "trainable": 0, "steps": 0}
    tasks = spec.get("tasks", TASKS)
    steps = row_steps(name, args.steps, args.budget)
    lr = args.full_lr if spec["method"] == "full" else args.lr
    extra = {"lora_rank": lora_rank} if spec["method"] == "lora" else dict(spec.get("model", {}))
    config = toyworld_train_config(base, Path(args.out) / f"{name.replace(':', '-')}-seed{seed}", tasks,
                                   method=spec["method"], mtu=spec.get("mtu"), steps=steps,
                                   batch_size=args.batch_size, lr=lr, seed=seed, log_with="none",
                                   task_weights=spec.get("task_weights"), **extra)
    result = train_and_score(config, examples, seed, tune_guidance=args.tune_count)
    return {"scores": result["scores"], "trainable": result["trainable"], "lr": lr, "steps": steps,
            "guidance": {task: value["chosen"] for task, value in result["guidance"].items()}}


BUDGET = ("steps", "batch_size", "tune_count", "eval_count", "base", "device")  # what every merged run must share


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} +- {statistics.stdev(values):.3f}"


def _values(runs: list[dict], task: str) -> list[float]:
    return [run["scores"][task][MAIN_METRIC[task]] for run in runs if task in run["scores"]]


def _mean(runs: list[dict], task: str) -> float | None:
    values = _values(runs, task)
    return statistics.fmean(values) if values else None


def table(results: dict[str, list[dict]]) -> str:
    """The markdown table (mean +- std over seeds), then how MTU N=4 stands against the issue's target."""
    lines = ["| row | trainable | lr | steps | seeds | " + " | ".join(f"{task} {MAIN_METRIC[task]}" for task in TASKS)
             + " |", "|" + "---|" * (len(TASKS) + 5)]
    for name, runs in results.items():
        cells = [_cell(_values(runs, task)) for task in TASKS]
        seeds = ",".join(str(run.get("seed", "?")) for run in runs)
        rate = "-" if runs[0].get("lr") is None else f"{runs[0]['lr']:g}"  # one per row (`merge` checks)
        steps = ",".join(sorted({str(run.get("steps", "?")) for run in runs}))
        lines.append(f"| {name} | {runs[0]['trainable']:,} | {rate} | {steps} | {seeds} | " + " | ".join(cells) + " |")
    for mtu_row, peers in TARGET_ROWS.items():
        others = [f"single:{task}" for task in TASKS] + list(peers)
        if mtu_row not in results or not any(other in results for other in others):
            continue
        lines.append(f"\n{mtu_row} against the target (within 5% of the single-task fine-tune; ahead of "
                     f"{' and '.join(peers)}):")
        for task in TASKS:
            mtu = _mean(results[mtu_row], task)
            parts = []
            single = _mean(results.get(f"single:{task}", []), task)
            if single is not None:
                ratio = mtu / single if single else float("inf") if mtu else 1.0
                parts.append(f"mtu/single {ratio:.3f} ({'within 5%' if mtu >= 0.95 * single else 'below'})")
            for other in peers:
                value = _mean(results.get(other, []), task)
                if value is not None:
                    parts.append(f"vs {other} {mtu - value:+.3f} ({'ahead' if mtu > value else 'not ahead'})")
            lines.append(f"  {task}: " + "; ".join(parts))
    return "\n".join(lines)


# The MTU rows judged against the target, each with the rows it must be ahead of (same task mixing).
TARGET_ROWS = {"mtu-n4": ("lora", "ia3"), "mtu-n4-sr2": ("lora-sr2", "ia3-sr2")}


def merge(paths: list[str], rows: list[str] | None = None) -> dict[str, list[dict]]:
    """Joins the rows of several runs' quality.json (rows or seeds run on different days or machines); `rows`
    keeps only those rows, and `PATH@ROW+ROW` only those of one file. They must share the budget (steps, batch,
    tune/eval counts, base, training device; each row one learning rate) and, where they hold rows on several
    tasks, the `--budget` mode (base and single-task rows are the same in both); a (row, seed) pair may appear only
    once."""
    results: dict[str, list[dict]] = {}
    budget = mode = None
    for spec in paths:
        path, _, only = spec.partition("@")
        chosen = only.split("+") if only else None
        unknown = [name for name in chosen or [] if name not in ALL_ROWS]
        if unknown:
            raise SystemExit(f"--merge: unknown rows {unknown} after '@' in {spec!r}")
        try:
            data = json.loads(Path(path).read_text())
            this = {key: data["args"].get(key, "cpu" if key == "device" else None) for key in BUDGET}
            kept = {name: runs for name, runs in data["results"].items()
                    if (rows is None or name in rows) and (chosen is None or name in chosen)}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise SystemExit(f"--merge: {path} is not a readable quality.json ({type(error).__name__}: {error})")
        if budget is None:
            budget = (this, path)
        elif this != budget[0]:
            raise SystemExit(f"--merge: {path} was run with {this}, but {budget[1]} with {budget[0]}; "
                             "only runs with the same budget can share a table")
        if any(len(row_tasks(name)) > 1 for name in kept if name in ALL_ROWS):
            this_mode = data["args"].get("budget", "per-row")  # files from before --budget were per-row
            if mode is None:
                mode = (this_mode, path)
            elif this_mode != mode[0]:
                raise SystemExit(f"--merge: {path} has multi-task rows at --budget {this_mode}, but {mode[1]} at "
                                 f"{mode[0]}; pick one with --rows")
        seeds = [int(seed) for seed in str(data["args"]["seeds"]).split(",")]
        for name, runs in kept.items():
            for index, run in enumerate(runs):
                run.setdefault("seed", seeds[index])  # files written before runs recorded their seed and rate
                run.setdefault("lr", data["args"]["lr"] if name != "base" else None)
                run.setdefault("steps", data["args"]["steps"] if name != "base" else 0)  # those were per-row
                if any(other.get("seed") == run.get("seed") for other in results.get(name, [])):
                    raise SystemExit(f"--merge: row {name} seed {run.get('seed')} appears twice (again in {path})")
                if any(other.get("lr") != run.get("lr") for other in results.get(name, [])):
                    raise SystemExit(f"--merge: row {name} was run at several learning rates (again in {path}, at "
                                     f"{run.get('lr')}); one row, one rate")
                results.setdefault(name, []).append(run)
    order = [name for name in ALL_ROWS if name in results]
    return {name: sorted(results[name], key=lambda run: run.get("seed", -1)) for name in order}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="learning rate of the MTU, LoRA and IA3 rows")
    parser.add_argument("--full-lr", type=float, default=2e-4, help="learning rate of the full fine-tunes (single:*)")
    parser.add_argument("--tune-count", type=int, default=32,
                        help="validation examples for choosing edit/inpaint guidance (0: paper defaults)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--eval-count", type=int, default=32)
    parser.add_argument("--rows", default=None, help="rows to run (default: all of the paper's), or with --merge "
                        "the rows to keep (default: all)")
    parser.add_argument("--budget", choices=("per-row", "per-task"), default="per-row",
                        help="steps per row, or per task a row trains on (the paper's; see above)")
    parser.add_argument("--base", default=None, help="base pipeline folder (default: the shipped toy-world base)")
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--merge", default=None,
                        help="comma-separated quality.json files, each optionally FILE@ROW+ROW to keep only those "
                        "rows of it: print their joined table and train nothing")
    args = parser.parse_args()
    rows = args.rows.split(",") if args.rows else None
    unknown = [row for row in rows or [] if row not in ALL_ROWS]
    if unknown:
        parser.error(f"unknown --rows {unknown}; known: {', '.join(ALL_ROWS)}")
    if args.merge:
        print(table(merge(args.merge.split(","), rows)))
        return 0
    rows = rows or list(ROWS)
    import torch

    args.device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"  # where training runs
    seeds = [int(seed) for seed in args.seeds.split(",")]
    base = args.base or str(shipped_base())
    examples = {task: evaluation_set(task, args.eval_count) for task in TASKS}
    lora_rank, mtu_trainable = matched_lora_rank(base)
    print(f"base {base}; {args.steps} steps ({args.budget}) x batch {args.batch_size} on {args.device}, "
          f"lr {args.lr} (full fine-tunes {args.full_lr}), seeds {seeds}, {args.eval_count} held-out examples per "
          f"task; LoRA rank {lora_rank} "
          f"(MTU N=4 trains {mtu_trainable:,})",
          flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for name in rows:
        for seed in seeds:
            start = time.perf_counter()
            results.setdefault(name, []).append({"seed": seed, **run_row(name, ALL_ROWS[name], base, args, seed,
                                                                         examples, lora_rank)})
            print(f"  {name} seed {seed}: {time.perf_counter() - start:.0f} s "
                  f"{json.dumps(results[name][-1]['scores'])} guidance {results[name][-1].get('guidance')}",
                  file=sys.stderr, flush=True)
            # After every run, so a long benchmark stopped part way keeps what it measured (--merge joins parts).
            atomic_write_text(Path(args.out) / "quality.json", json.dumps(
                {"args": vars(args), "lora_rank": lora_rank, "results": results}, indent=1))
    print("\n" + table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
