"""Quality on the toy world: analogues of the paper's Tables 2-5, every row with the same data, steps, batch,
learning rate and seeds, scored by the oracle on the same held-out examples.

    python benchmarks/toyworld_quality.py [--steps 1600] [--batch-size 16] [--lr 2e-3] [--full-lr 2e-4] [--seeds 0,1]
                                          [--eval-count 256] [--tune-count 32] [--rows ROW,ROW,...]
                                          [--budget per-row|per-task] [--out runs/quality]
    python benchmarks/toyworld_quality.py --merge runs/a/quality.json,runs/b/quality.json [--rows ROW,...]

Rows (`--rows`, default all):
  base            the shipped base model, text-to-image only (Table 2, first row)
  single:TASK     full fine-tuning of the base on one task (Table 2: one model per task), at `--full-lr`: all
                  4.2M weights move, and at the shared 2e-3 full fine-tuning fell below the base on t2i (0.594 vs
                  0.719, seed 0), which would make a straw man of the single-task rows
  mtu-n4          MTU N=4, G=1/4 on all four tasks (Table 2: one model for all)
  lora, ia3       Table 3's task-specific adapters: one LoRA (or IA3) adapter per task, each sample through its
                  task's, trained together on all four tasks with task input convs. LoRA on the FFN layers, its
                  per-task rank chosen so that the four adapters and the input convs together match MTU N=4's
                  trainable parameters (`mtu.training.methods.matched_lora_rank`: about the shared rank / 4); IA3
                  on the whole block (attention and FFN), as the paper does because FFN-only IA3 did not train
  lora-shared, ia3-shared     one adapter shared by all four tasks (LoRA rank matched the same way, so four
                  times the per-task rank): what the `lora` / `ia3` rows were before issue 12 (our own rows)
  mtu-n1, mtu-n2, mtu-n8, mtu-top4of8     N in {1, 2, 8} with G=1/N, and top-k 4 of 8 (Table 4)
  mtu-n4-shard    the paper's plain shard init instead of our `preserve` init (our own row)
Diagnostic rows (only when named): mtu-n4-alone:TASK (MTU N=4 trained on that task alone: the same trainable parts
  as mtu-n4 with all the batch on one task, like single:TASK) and full-all (one full fine-tune on all four tasks,
  at `--full-lr`), to tell a gap from sharing one model among tasks apart from a gap from training fewer weights;
  mtu-n4-sr2, lora-sr2, ia3-sr2, lora-shared-sr2, ia3-shared-sr2 (those rows with sr drawn twice as often as each
  other task: 2/5 of the samples instead of 1/4, each sample's task drawn at random).
Paper rows (issue 12.5; only when named, singly or by group: `--rows table1,table4-bottom,table5,top4of8`):
  table1-PART:TASK  a full fine-tune of only PART (ffn, self_attn, cross_attn) of every transformer block on TASK
                  (Table 1, the paper's motivation), task input convs always trained
  mtu-nN-gG       N experts of granularity G without the parameter constraint (Table 4 bottom; with the
                  constrained mtu-n1/n2/n4 the group table4-bottom); N x G < 1 rows use the plain shard init
  mtu-n4:T1+T2[+T3]  MTU N=4 on a subset of the tasks (Table 5: with mtu-n4-alone:TASK and mtu-n4, all 15)
  mtu-top4of8-g1/4  top-4 of 8 at G=1/4 (active parameters equal to the FFN, the paper's text)

Budget (`--budget`): `per-row` (default, CPU-sized) trains every row `--steps` steps, so a row on four tasks sees
each task a quarter as often as a single-task row; `per-task` is the paper's budget (A.2: single-task and MTU models
alike train 100 epochs, i.e. every task's data as often in both), so a row on k tasks trains k x `--steps` steps.
The two agree on base and single-task rows.
Every trained row's edit and inpaint guidance is chosen the same way, on `--tune-count` validation examples
(training-split scenes; never the held-out ones), as the demo does (`experiment.choose_guidance`).

Main metrics: t2i caption faithfulness, edit success, sr PSNR (dB), inpaint success (removed and the rest
preserved), on `--eval-count` held-out examples per task (default 256, issue 11). Each run keeps, per task, the
main metric of every example ("per_example": bools for the rates, sr's PSNR capped at 100 dB) and the summary of
the partial metrics with intervals ("partial": `metrics.summarize` of `metrics.example_record`s).

Each cell is `mean [low, high] +- sd`: the mean over seeds of the main metric; in brackets its 95% interval over
the examples; after +- the standard deviation over seeds (only with two seeds or more). The interval is over the
per-example values averaged over the row's seeds (all seeds score the same examples): with one seed a rate gets
the Wilson interval of its outcomes, and with several the percentile bootstrap (2000 resamples, over examples) of
the mean of the per-example success fractions; PSNR always gets that bootstrap of the per-example seed-means. So
the interval measures how far the figure could move on other examples, the +- how far it moves with the seed.
Cells of runs saved before per-example outcomes were kept (or a row mixing such runs with newer ones) show no
interval.

After the table: MTU N=4 (and mtu-n4-sr2) against the issue's target, from the means (within 5% of each
single-task fine-tune; ahead of LoRA and IA3), then paired comparisons on the same examples: MTU against each
single:TASK (on TASK), LoRA and IA3 (their -sr2 rows for mtu-n4-sr2), and mtu-n4 against mtu-n4-shard (preserve
vs shard), and every claim of the paper rows (`PAPER_COMPARISONS`: Table 1's FFN rows against the attention rows,
Table 4 bottom's N and G, top-4 of 8 at G=1/4, Table 5's combinations against each task alone, the last also as an
interference table). Each is the difference first minus second of the per-example main metric averaged over the seeds both
rows share, with a 95% paired bootstrap interval over examples (`mtu.stats.paired_difference`); for the rates also
McNemar's exact p on the discordant (example, seed) pairs pooled over those seeds (with one shared seed, plain
McNemar on that seed's outcomes). With two shared seeds or more, also each seed's difference and a 95% interval
that resamples seeds and examples at once (`mtu.stats.crossed_bootstrap_interval`), which holds how far the
difference moves from one training run to the next: "significant" when every interval given excludes 0, otherwise
"tie".

The JSON (`--out`) is rewritten after every run; `--merge` joins runs made at different times (same budget) into
one table, with the intervals and paired comparisons of the runs that kept per-example outcomes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

from mtu.stats import (crossed_bootstrap_interval, mcnemar_p_value, paired_difference, summarize_mean,  # noqa: E402
                       summarize_rate)
from mtu.toyworld.components import shipped_base  # noqa: E402
from mtu.toyworld.evaluate import MAIN_METRIC, TASKS, evaluation_set, score_examples  # noqa: E402
from mtu.toyworld.experiment import score_base, toyworld_train_config, train_and_score  # noqa: E402
from mtu.upcycling.serialization import atomic_write_text  # noqa: E402

ROWS = {
    "base": None,
    **{f"single:{task}": {"method": "full", "tasks": (task,)} for task in TASKS},
    "mtu-n4": {"method": "mtu", "mtu": {"num_experts": 4}},
    "lora": {"method": "lora"},
    "ia3": {"method": "ia3", "model": {"ia3_on_attention": True}},
    "lora-shared": {"method": "lora_shared"},
    "ia3-shared": {"method": "ia3_shared", "model": {"ia3_on_attention": True}},
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
    "lora-shared-sr2": {"method": "lora_shared", "task_weights": {"sr": 2.0}},
    "ia3-shared-sr2": {"method": "ia3_shared", "model": {"ia3_on_attention": True}, "task_weights": {"sr": 2.0}},
}
# The paper's experiments beyond Tables 2-4's top (issue 12.5; run when named, e.g. `--rows table1`):
# Table 1, a full fine-tune of one part of every transformer block on one task (task input convs always train);
# Table 4 bottom, N experts x granularity G without the parameter constraint (G = 1/N is the constrained row);
# Table 5, MTU on every combination of the four tasks (the singles are mtu-n4-alone:TASK, all four mtu-n4);
# the text's "top-4 of 8 with active parameters equal to the FFN": G = 1/4 (mtu-top4of8 keeps G = 1/8).
TABLE5_ROWS = [f"mtu-n4:{'+'.join(subset)}" for size in (2, 3) for subset in itertools.combinations(TASKS, size)]
PAPER_ROWS = {
    **{f"table1-{part}:{task}": {"method": "full", "tasks": (task,), "model": {"trainable": [part]}}
       for part in ("ffn", "self_attn", "cross_attn") for task in TASKS},
    # N x G < 1 cannot preserve the base at init (fewer FFN units than the base has): the paper's plain copy.
    **{f"mtu-n{n}-g{label}": {"method": "mtu", "mtu": {"num_experts": n, "granularity": g,
                                                       **({"init": "shard"} if n * g < 1 else {})}}
       for n, label, g in ((1, "1/2", 0.5), (2, "1", 1.0), (4, "1/2", 0.5), (4, "1", 1.0))},
    **{name: {"method": "mtu", "mtu": {"num_experts": 4}, "tasks": tuple(name.split(":")[1].split("+"))}
       for name in TABLE5_ROWS},
    "mtu-top4of8-g1/4": {"method": "mtu", "mtu": {"num_experts": 8, "top_k": 4, "granularity": 0.25}},
}
# Named groups of rows for --rows.
ROW_GROUPS = {"table1": [name for name in PAPER_ROWS if name.startswith("table1-")],
              "table4-bottom": ["mtu-n1", "mtu-n1-g1/2", "mtu-n2", "mtu-n2-g1", "mtu-n4", "mtu-n4-g1/2", "mtu-n4-g1"],
              "table5": [f"mtu-n4-alone:{task}" for task in TASKS] + TABLE5_ROWS + ["mtu-n4"],
              "top4of8": ["mtu-top4of8", "mtu-top4of8-g1/4"]}
ALL_ROWS = ROWS | DIAGNOSTIC_ROWS | PAPER_ROWS


# The rows' methods whose LoRA rank is matched to MTU N=4's trainable count, and whether each task has an adapter.
LORA_METHODS = {"lora": True, "lora_shared": False}
# quality.json files record `"peft_rows": "per-task"` since issue 12; in older ones the lora/ia3 rows (and their
# -sr2 rows) trained one adapter shared by all tasks, and `merge` reads them as the -shared rows they were.
PEFT_ROWS = "per-task"
OLD_PEFT_ROWS = {"lora": "lora-shared", "ia3": "ia3-shared", "lora-sr2": "lora-shared-sr2",
                 "ia3-sr2": "ia3-shared-sr2"}


def matched_lora_rank(base: str, tasks=TASKS, mtu: dict | None = None, per_task: bool = True) -> tuple[int, int]:
    """(LoRA rank whose baseline's trainable parameters, all its adapters and task input convs together, come
    closest to MTU's; MTU's trainable count). `per_task`: one adapter per task (rows lora*), else one shared."""
    from mtu.training.config import ModelConfig
    from mtu.training.methods import build_model, matched_lora_rank as closest_rank, trainable_parameters
    from mtu.upcycling import load_base_unet

    config = ModelConfig(base=base, method="mtu", mtu=mtu or {"num_experts": 4})
    target = sum(p.numel() for p in trainable_parameters(build_model(load_base_unet(base), config,
                                                                     list(tasks))).values())
    return closest_rank(load_base_unet(base), list(tasks), target, per_task), target


def row_tasks(name: str) -> tuple:
    """The tasks a row trains on (none for the base)."""
    spec = ALL_ROWS[name]
    return () if spec is None else tuple(spec.get("tasks", TASKS))


def row_steps(name: str, steps: int, budget: str) -> int:
    """Training steps of a row: `steps` each (`per-row`), or `steps` per task it trains on (`per-task`)."""
    return steps * max(1, len(row_tasks(name))) if budget == "per-task" else steps


def run_row(name: str, spec, base: str, args, seed: int, examples: dict, lora_ranks: dict[str, int]) -> dict:
    if spec is None:  # the base model itself
        scores, outputs = score_base(base, examples["t2i"], seed)
        return {"scores": {"t2i": scores}, "trainable": 0, "steps": 0,
                **_per_example({"t2i": score_examples(examples["t2i"], outputs, seed)})}
    tasks = spec.get("tasks", TASKS)
    steps = row_steps(name, args.steps, args.budget)
    lr = args.full_lr if spec["method"] == "full" else args.lr
    extra = {"lora_rank": lora_ranks[spec["method"]]} if spec["method"] in LORA_METHODS else dict(spec.get("model", {}))
    config = toyworld_train_config(base, Path(args.out) / f"{name.replace(':', '-')}-seed{seed}", tasks,
                                   method=spec["method"], mtu=spec.get("mtu"), steps=steps,
                                   batch_size=args.batch_size, lr=lr, seed=seed, log_with="none",
                                   task_weights=spec.get("task_weights"), **extra)
    result = train_and_score(config, examples, seed, tune_guidance=args.tune_count, records=True)
    return {"scores": result["scores"], "trainable": result["trainable"], "lr": lr, "steps": steps,
            "guidance": {task: value["chosen"] for task, value in result["guidance"].items()},
            **_per_example(result["records"])}


def _per_example(records: dict[str, dict]) -> dict:
    """What a run's JSON keeps of `evaluate.score_examples` per task: the main metric of every example and the
    summary (with intervals) of the example records."""
    return {"per_example": {task: value["main"] for task, value in records.items()},
            "partial": {task: value["summary"] for task, value in records.items()}}


BUDGET = ("steps", "batch_size", "tune_count", "eval_count", "base", "device")  # what every merged run must share


def _outcomes(run: dict, task: str) -> list | None:
    """The run's main metric of every example of `task`, or None (runs saved before they were kept)."""
    return (run.get("per_example") or {}).get(task)


def _value(run: dict, task: str) -> float:
    """The run's main metric on `task`: the mean of its per-example values when kept (sr's PSNR capped as in
    `metrics.example_record`), else its recorded mean."""
    outcomes = _outcomes(run, task)
    return statistics.fmean(map(float, outcomes)) if outcomes else run["scores"][task][MAIN_METRIC[task]]


def _values(runs: list[dict], task: str) -> list[float]:
    return [_value(run, task) for run in runs if task in run["scores"]]


def _is_rate(task: str) -> bool:
    return MAIN_METRIC[task] != "psnr"


def interval(runs: list[dict], task: str) -> dict | None:
    """{"value", "low", "high", "count"} of a row's main metric on `task` with a 95% interval over examples (see
    the module's docstring), or None when a run lacks per-example outcomes or the runs' example counts differ."""
    outcomes = [_outcomes(run, task) for run in runs if task in run["scores"]]
    if not outcomes or any(not values for values in outcomes) or len({len(values) for values in outcomes}) != 1:
        return None
    if _is_rate(task) and len(outcomes) == 1:
        return summarize_rate(np.array(outcomes[0], dtype=bool))
    return summarize_mean(np.array(outcomes, dtype=np.float64).mean(axis=0))  # (examples,) seed-means


def _cell(runs: list[dict], task: str) -> str:
    values = _values(runs, task)
    if not values:
        return "-"
    text = f"{statistics.fmean(values):.3f}"
    bounds = interval(runs, task)
    if bounds is not None:
        text += f" [{bounds['low']:.3f}, {bounds['high']:.3f}]"
    return text if len(values) == 1 else f"{text} +- {statistics.stdev(values):.3f}"


def paired(first: list[dict], second: list[dict], task: str) -> dict | str:
    """Compares two rows on the same examples of `task`: the per-example main metric averaged over the seeds both
    rows share, first minus second, by `mtu.stats.paired_difference` (95% paired bootstrap over examples).

    Returns {"difference", "low", "high", "significant", "seeds", "count"} and for rates "first_only",
    "second_only" (discordant (example, seed) pairs pooled over those seeds) and "p_value" (exact McNemar on
    them); with two shared seeds or more also "per_seed" (each seed's difference) and "seed_low", "seed_high"
    (`crossed_bootstrap_interval` of the per-example differences: seeds and examples resampled), and then
    "significant" needs both intervals to exclude 0. Or a string saying why the rows cannot be paired.
    """
    ones = {run.get("seed"): _outcomes(run, task) for run in first if _outcomes(run, task)}
    others = {run.get("seed"): _outcomes(run, task) for run in second if _outcomes(run, task)}
    if not ones or not others:
        return "no per-example outcomes (runs saved before they were kept)"
    seeds = sorted(set(ones) & set(others), key=lambda seed: (seed is None, seed))
    if not seeds:
        return "no seed with per-example outcomes in both rows"
    if len({len(ones[seed]) for seed in seeds} | {len(others[seed]) for seed in seeds}) != 1:
        return "different example counts"
    one = np.array([ones[seed] for seed in seeds], dtype=np.float64)  # (seeds, examples)
    other = np.array([others[seed] for seed in seeds], dtype=np.float64)
    result = {**paired_difference(one.mean(axis=0), other.mean(axis=0)), "seeds": seeds, "count": one.shape[1]}
    if len(seeds) > 1:
        differences = one - other  # (seeds, examples)
        seed_low, seed_high = crossed_bootstrap_interval(differences)
        result.update(per_seed=differences.mean(axis=1).tolist(), seed_low=seed_low, seed_high=seed_high,
                      significant=result["significant"] and (seed_low > 0 or seed_high < 0))
    if _is_rate(task):
        first_only, second_only = int(((one > 0.5) & (other < 0.5)).sum()), int(((one < 0.5) & (other > 0.5)).sum())
        result.update(first_only=first_only, second_only=second_only,
                      p_value=mcnemar_p_value(first_only, second_only))
    return result


def comparisons(results: dict[str, list[dict]]) -> list[tuple[str, str, str]]:
    """(first row, second row, task) of every paired comparison the rows in `results` allow: each target MTU row
    against single:TASK on TASK and against its peers on every task, then `OTHER_COMPARISONS` (mtu-n4 against
    mtu-n1/n2/n8/top4of8 (Table 4) and mtu-n4-shard, the MTU rows against the shared-adapter rows)."""
    pairs = [(mtu_row, other) for mtu_row, peers in TARGET_ROWS.items() for other in
             [f"single:{task}" for task in TASKS] + list(peers)] + OTHER_COMPARISONS + PAPER_COMPARISONS
    return [(one, other, task) for one, other in pairs if one in results and other in results
            for task in TASKS if _scored(results[one], task) and _scored(results[other], task)]


def _scored(runs: list[dict], task: str) -> bool:
    return any(task in run["scores"] for run in runs)


def interference_table(results: dict[str, list[dict]]) -> str:
    """Table 5 on the toy world: for every combination of tasks trained together (the Table 5 rows, then
    mtu-n4), each of its tasks' mean main metric and, in brackets, its paired difference from that task trained
    alone (mtu-n4-alone:TASK; `paired`, seeds pooled), with * where it is significant. Empty without an alone row."""
    alone = {task: results.get(f"mtu-n4-alone:{task}") for task in TASKS}
    if not any(alone.values()):
        return ""
    lines = ["| tasks trained together | " + " | ".join(f"{task} {MAIN_METRIC[task]}" for task in TASKS) + " |",
             "|" + "---|" * (len(TASKS) + 1)]
    for name in [f"mtu-n4-alone:{task}" for task in TASKS] + TABLE5_ROWS + ["mtu-n4"]:
        if name not in results:
            continue
        cells = []
        for task in TASKS:
            if not _scored(results[name], task):
                cells.append("-")
                continue
            cell = f"{_mean(results[name], task):.3f}"
            if not name.startswith("mtu-n4-alone:") and alone[task]:
                result = paired(results[name], alone[task], task)
                if not isinstance(result, str):
                    cell += f" ({result['difference']:+.3f}{'*' if result['significant'] else ''})"
            cells.append(cell)
        label = name.split(":", 1)[1] if ":" in name else "all four"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return ("Task interference (Table 5): each task's mean, and in brackets its paired difference from the task "
            "trained alone (* significant):\n" + "\n".join(lines))


def _paired_line(one: str, other: str, task: str, result: dict | str) -> str:
    line = f"  {one} vs {other}, {task} {MAIN_METRIC[task]}: "
    if isinstance(result, str):
        return line + f"not paired: {result}"
    line += f"{result['difference']:+.3f} [{result['low']:+.3f}, {result['high']:+.3f}]"
    if "per_seed" in result:
        line += (f", over seeds too [{result['seed_low']:+.3f}, {result['seed_high']:+.3f}], per seed "
                 + "/".join(f"{value:+.3f}" for value in result["per_seed"]))
    line += f" {'significant' if result['significant'] else 'tie'}"
    if "p_value" in result:
        line += (f"; McNemar p {result['p_value']:.3g} ({result['first_only']} vs {result['second_only']} "
                 f"discordant)")
    return line + f"; seeds {','.join(map(str, result['seeds']))}, {result['count']} examples"


def _mean(runs: list[dict], task: str) -> float | None:
    values = _values(runs, task)
    return statistics.fmean(values) if values else None


def table(results: dict[str, list[dict]]) -> str:
    """The markdown table (mean [95% interval over examples] +- sd over seeds), how MTU N=4 stands against the
    issue's target, and the paired comparisons on the same examples (see the module's docstring)."""
    lines = ["| row | trainable | lr | steps | seeds | " + " | ".join(f"{task} {MAIN_METRIC[task]}" for task in TASKS)
             + " |", "|" + "---|" * (len(TASKS) + 5)]
    for name, runs in results.items():
        cells = [_cell(runs, task) for task in TASKS]
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
    compared = [(one, other, task, paired(results[one], results[other], task))
                for one, other, task in comparisons(results)]
    if any(not isinstance(result, str) for *_, result in compared):
        lines.append("\nPaired comparisons on the same held-out examples (first minus second; per-example main "
                     "metric averaged over the seeds both rows share; [95% paired bootstrap interval over examples]; "
                     "with two seeds or more, the 95% interval over seeds and examples and each seed's difference; "
                     "significant when every interval excludes 0, else tie; McNemar's exact p on the discordant "
                     "(example, seed) pairs pooled over those seeds):")
        lines += [_paired_line(*entry) for entry in compared]
    interference = interference_table(results)
    if interference:
        lines.append("\n" + interference)
    return "\n".join(lines)


# The MTU rows judged against the target, each with the rows it must be ahead of (same task mixing).
TARGET_ROWS = {"mtu-n4": ("lora", "ia3"), "mtu-n4-sr2": ("lora-sr2", "ia3-sr2")}
# Further paired comparisons, made when both rows are there: Table 4's experts (N=4 against N=1, 2, 8 and top-4
# of 8 at the same parameters), then ours (not the target).
OTHER_COMPARISONS = [("mtu-n4", "mtu-n1"), ("mtu-n4", "mtu-n2"), ("mtu-n4", "mtu-n8"), ("mtu-n4", "mtu-top4of8"),
                     ("mtu-n4", "mtu-n4-shard"), ("mtu-n4", "lora-shared"), ("mtu-n4", "ia3-shared"),
                     ("mtu-n4-sr2", "lora-shared-sr2"), ("mtu-n4-sr2", "ia3-shared-sr2")]
# Table 5's text also compares combinations with each other, first the one the paper finds better: "IE ...
# increasing from 44.0 in our MTU model to 52.6 when combined [with IP]", "adding IP to SR and IE hurts SR
# performance", "training T2I, IE, and IP together also reduces T2I".
TABLE5_CLAIMS = [("mtu-n4:edit+inpaint", "mtu-n4"), ("mtu-n4:edit+sr", "mtu-n4:edit+sr+inpaint"),
                 ("mtu-n4:t2i+edit", "mtu-n4:t2i+edit+inpaint")]
# The paper's claims of issue 12.5, each a paired comparison whose first row the paper finds better (made when both
# rows are there): Table 1, the FFNs fine-tuned beat self- and cross-attention on each task; Table 4 bottom, at G=1
# N=2 and N=4 beat N=1, at G=1/2 N=4 beats N=2, and at a fixed N, G=1 beats G<1 (the SDXL finding; SD1.5's top
# half found the reverse); the text, top-4 of 8 at the FFN's active parameters trails all four experts (and we ask
# how G=1/4 stands against G=1/8); Table 5, each task trained beside others against that task alone (an interference
# shows as a negative difference; its own table below).
PAPER_COMPARISONS = [
    *[(f"table1-ffn:{task}", f"table1-{part}:{task}") for task in TASKS for part in ("self_attn", "cross_attn")],
    ("mtu-n2-g1", "mtu-n1"), ("mtu-n4-g1", "mtu-n1"), ("mtu-n4-g1/2", "mtu-n2"),
    ("mtu-n1", "mtu-n1-g1/2"), ("mtu-n2-g1", "mtu-n2"), ("mtu-n4-g1", "mtu-n4-g1/2"), ("mtu-n4-g1/2", "mtu-n4"),
    ("mtu-n4", "mtu-top4of8-g1/4"), ("mtu-top4of8-g1/4", "mtu-top4of8"),
    *[(name, f"mtu-n4-alone:{task}") for name in TABLE5_ROWS + ["mtu-n4"] for task in row_tasks(name)],
    *TABLE5_CLAIMS,
]


def merge(paths: list[str], rows: list[str] | None = None) -> dict[str, list[dict]]:
    """Joins the rows of several runs' quality.json (rows or seeds run on different days or machines); `rows`
    keeps only those rows, and `PATH@ROW+ROW` only those of one file. They must share the budget (steps, batch,
    tune/eval counts, base, training device; each row one learning rate) and, where they hold rows on several
    tasks, the `--budget` mode (base and single-task rows are the same in both); a (row, seed) pair may appear only
    once. Files from before per-task PEFT rows (no `"peft_rows"`) have their lora/ia3 rows read as the -shared
    rows they were (`OLD_PEFT_ROWS`)."""
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
            named = data["results"] if data.get("peft_rows") == PEFT_ROWS else {
                OLD_PEFT_ROWS.get(name, name): runs for name, runs in data["results"].items()}
            kept = {name: runs for name, runs in named.items()
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


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="learning rate of the MTU, LoRA and IA3 rows")
    parser.add_argument("--full-lr", type=float, default=2e-4, help="learning rate of the full fine-tunes (single:*)")
    parser.add_argument("--tune-count", type=int, default=32,
                        help="validation examples for choosing edit/inpaint guidance (0: paper defaults)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--eval-count", type=int, default=256, help="held-out examples per task")
    parser.add_argument("--rows", default=None, help="rows to run (default: all of the paper's), or with --merge "
                        "the rows to keep (default: all)")
    parser.add_argument("--budget", choices=("per-row", "per-task"), default="per-row",
                        help="steps per row, or per task a row trains on (the paper's; see above)")
    parser.add_argument("--base", default=None, help="base pipeline folder (default: the shipped toy-world base)")
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--merge", default=None,
                        help="comma-separated quality.json files, each optionally FILE@ROW+ROW to keep only those "
                        "rows of it: print their joined table and train nothing")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    rows = [row for item in args.rows.split(",") for row in ROW_GROUPS.get(item, [item])] if args.rows else None
    unknown = [row for row in rows or [] if row not in ALL_ROWS]
    if unknown:
        parser.error(f"unknown --rows {unknown}; known: {', '.join(ALL_ROWS)}, or the groups "
                     f"{', '.join(ROW_GROUPS)}")
    if args.merge:
        print(table(merge(args.merge.split(","), rows)))
        return 0
    rows = rows or list(ROWS)
    import torch

    args.device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"  # where training runs
    seeds = [int(seed) for seed in args.seeds.split(",")]
    base = args.base or str(shipped_base())
    examples = {task: evaluation_set(task, args.eval_count) for task in TASKS}
    lora_ranks = {}
    if any(ALL_ROWS[name] and ALL_ROWS[name]["method"] in LORA_METHODS for name in rows):
        for method, per_task in LORA_METHODS.items():
            lora_ranks[method], mtu_trainable = matched_lora_rank(base, per_task=per_task)
    ranks = (f"; LoRA rank {lora_ranks['lora']} per task, {lora_ranks['lora_shared']} shared (MTU N=4 trains "
             f"{mtu_trainable:,})") if lora_ranks else ""
    print(f"base {base}; {args.steps} steps ({args.budget}) x batch {args.batch_size} on {args.device}, "
          f"lr {args.lr} (full fine-tunes {args.full_lr}), seeds {seeds}, {args.eval_count} held-out examples per "
          f"task{ranks}", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for name in rows:
        for seed in seeds:
            start = time.perf_counter()
            results.setdefault(name, []).append({"seed": seed, **run_row(name, ALL_ROWS[name], base, args, seed,
                                                                         examples, lora_ranks)})
            print(f"  {name} seed {seed}: {time.perf_counter() - start:.0f} s "
                  f"{json.dumps(results[name][-1]['scores'])} guidance {results[name][-1].get('guidance')}",
                  file=sys.stderr, flush=True)
            # After every run, so a long benchmark stopped part way keeps what it measured (--merge joins parts).
            atomic_write_text(Path(args.out) / "quality.json", json.dumps(
                {"args": vars(args), "peft_rows": PEFT_ROWS, "lora_ranks": lora_ranks, "results": results},
                indent=1))
    print("\n" + table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
