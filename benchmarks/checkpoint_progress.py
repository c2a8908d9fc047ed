"""How a long toy-world run is doing: scores a training checkpoint on VALIDATION examples (training-split scenes,
never the held-out ones, so watching a run never tunes it on the test set) and appends one row per task to a
JSON-lines log; `--table` prints the log as a markdown table, then each step against the task's previous step
scored on the same examples (same count and seed), paired: is the run still improving? (sr keeps its read-back
per example too, paired beside its PSNR.)

    python benchmarks/checkpoint_progress.py RUN/checkpoints/checkpoint-0004000 --count 64 --log progress.jsonl
    python benchmarks/checkpoint_progress.py --table progress.jsonl
    python benchmarks/checkpoint_progress.py --compare first.jsonl second.jsonl   # two runs (arms), same steps
    python benchmarks/checkpoint_progress.py RESTART/checkpoints/checkpoint-0002000 --step-offset 32000 --log L
    python benchmarks/checkpoint_progress.py --across-seeds seeds.jsonl   # one step scored under several seeds
    python benchmarks/checkpoint_progress.py RUN/checkpoints/checkpoint-0004000 --held-out MODEL/sampling.json --log L

`--across-seeds LOG`: the same checkpoint scored on the same examples under several sampling seeds (`--seed`); per
rate kept per example (edit's and inpaint's success, sr's read-back), how often each example succeeds across the
seeds: how much of a rate is the sampler's noise (examples that succeed under some seeds only) and how much is
never reached (no seed).

`--held-out SAMPLING_JSON`: the held-out scenes at the guidance of a model folder's sampling.json, for the final
comparison of finished runs (with a log of another run scored the same way) at settings chosen before; the rows
say so ("split", "sampling"), and `--compare` pairs them apart from validation rows.

`--step-offset N`: a run that continues another one's final weights (a restart) logs its steps after that run's, as
N + its own step, so that `--table LOG --since N` pairs it with the model it started from (that row copied in).

Guidance is fixed, so that every step of a run is scored alike: t2i text 7.5, edit text 7.5 / image 3.0, inpaint
text 3.0 / image 1.5, sr none (the pairs the first long-run model shipped with; packaging chooses its own pairs on
validation, lately edit 3 / 1.6 and inpaint 4 / 1.5); EMA weights when the run keeps an EMA (as final/).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SAMPLING = {"t2i": {"guidance_scale": 7.5}, "edit": {"guidance_scale": 7.5, "image_guidance_scale": 3.0},
            "inpaint": {"guidance_scale": 3.0, "image_guidance_scale": 1.5}, "sr": {}}
MAIN = {"t2i": "exact", "edit": "success", "sr": "psnr", "inpaint": "success"}
SECONDARY = {"sr": "read_back"}  # a rate kept per example beside the main metric, paired in the table too


def score_checkpoint(folder, tasks, count: int, seed: int = 0, step_offset: int = 0,
                     inference_steps: int | None = None, **scoring) -> list[dict]:
    """One row per task: the checkpoint's step, the task's main metric with its 95% interval and the partial
    scores that show progress before exact success does (`metrics.summarize`); the step is the checkpoint's plus
    `step_offset`. `inference_steps`: the sampler's steps (default the pipeline's, 20), recorded in the row.
    `scoring`: `score_pipeline`'s `split` and `sampling` (a finished run's final comparison)."""
    from mtu.toyworld.experiment import pipeline_for
    from mtu.training.export import checkpoint_run_config, model_from_checkpoint

    folder = Path(folder)
    base = checkpoint_run_config(folder).model.base
    pipe = pipeline_for(model_from_checkpoint(folder), base)
    return score_pipeline(pipe, tasks, count, seed, step_offset + int(folder.name.split("-")[-1]), str(folder),
                          inference_steps, **scoring)


def score_pipeline(pipe, tasks, count: int, seed: int, step: int, checkpoint: str,
                   inference_steps: int | None = None, split: str = "validation",
                   sampling: dict | None = None) -> list[dict]:
    """`score_checkpoint`'s rows for a pipeline in memory (e.g. a model a diagnosis trained in this process),
    logged at `step` under the name `checkpoint`. `split` "test" (the held-out scenes) and `sampling` (guidance per
    task, default `SAMPLING`) are for a final comparison of finished arms at settings chosen before, never for
    choosing them; both are recorded in the rows."""
    import torch

    from mtu.toyworld.evaluate import evaluation_set, generate_outputs, score_examples

    rows = []
    for task in tasks:
        start = time.perf_counter()
        examples = evaluation_set(task, count, split=split)
        with torch.no_grad():
            outputs = generate_outputs(pipe, examples, seed, **(sampling or SAMPLING).get(task, {}), **(
                {} if inference_steps is None else {"num_inference_steps": inference_steps}))
        scored = score_examples(examples, outputs, seed)
        rows.append({"checkpoint": checkpoint, "step": step, "task": task,
                     "count": count, "seed": seed, "main": MAIN[task], "summary": scored["summary"],
                     "per_example": scored["main"],
                     **({"per_example_secondary": {SECONDARY[task]: [bool(record[SECONDARY[task]])
                                                                     for record in scored["records"]]}}
                        if task in SECONDARY else {}),
                     **({} if inference_steps is None else {"inference_steps": inference_steps}),
                     **({} if split == "validation" else {"split": split}),
                     **({} if sampling is None else {"sampling": sampling.get(task, {})}),
                     "seconds": round(time.perf_counter() - start, 1)})
    return rows


def refuse_below(parser, checks) -> None:
    """Refuses in one line (`parser.error`) the first (name, value, minimum) of `checks` whose value is below its
    minimum, before any work."""
    for name, value, minimum in checks:
        if value < minimum:
            parser.error(f"{name} {value}: must be {minimum} or more")


def append_rows(log, rows: list[dict]) -> None:
    with open(log, "a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def _cell(value: dict) -> str:
    digits = 2 if value["value"] > 1.5 else 3  # PSNR in dB, rates in [0, 1]
    return f"{value['value']:.{digits}f} ({value['low']:.{digits}f}-{value['high']:.{digits}f})"


def _others(summary: dict, main: str) -> str:
    """The partial scores (those with intervals), then per edit kind how many were exact."""
    cells = [f"{key} {summary[key]['value']:.2f}" for key in summary
             if key != main and isinstance(summary[key], dict) and "value" in summary[key]]
    kinds = summary.get("per_kind", {})
    if kinds:
        cells.append("exact per kind: " + ", ".join(
            f"{kind} {round(entry['exact']['value'] * entry['count'])}/{entry['count']}" for kind, entry in
            kinds.items()))
    return "; ".join(cells)


def paired_secondary(later: dict, earlier: dict) -> list[tuple[str, dict]]:
    """(field, `paired_difference` of later minus earlier) for each rate both rows kept per example beside their
    main metric (`SECONDARY`, e.g. sr's read-back); none for rows logged before it was kept."""
    from mtu.stats import paired_difference

    kept = earlier.get("per_example_secondary", {})
    return [(field, paired_difference(outcomes, kept[field]))
            for field, outcomes in later.get("per_example_secondary", {}).items() if field in kept]


def paired_steps(rows: list[dict], since: int | None = None) -> list[str]:
    """Table lines: per task, each step's main metric minus the previous step's on the same examples (rows of the
    same count and seed that kept their per-example outcomes), with the paired interval (and McNemar for rates).
    `since`: each step against that step instead (for example the shipped model's), when it was scored."""
    from mtu.stats import paired_difference
    from mtu.toyworld.metrics import paired_cells

    lines = []
    previous: dict = {}
    for row in sorted(rows, key=lambda r: (r["task"], r["step"])):
        if "per_example" not in row:  # rows logged before the outcomes were kept
            continue
        key = (row["task"], row["count"], row.get("seed", 0))
        if key in previous and previous[key]["step"] != row["step"]:  # a step scored twice is not paired with itself
            before = previous[key]
            result = paired_difference(row["per_example"], before["per_example"])
            lines.append(f"| {row['task']} | {before['step']} -> {row['step']} | {row['count']} | "
                         f"{paired_cells(result)} |")
            for field, result in paired_secondary(row, before):
                lines.append(f"| {row['task']} {field} | {before['step']} -> {row['step']} | {row['count']} | "
                             f"{paired_cells(result)} |")
        if since is None or row["step"] == since:
            previous[key] = row
    if not lines:
        return []
    against = "the task's previous one" if since is None else f"step {since}"
    return ["", f"Each step against {against} on the same examples (paired):", "",
            "| task | steps | n | main metric difference (95% CI) | only the later / only the earlier | McNemar p |",
            "|---|---|---:|---|---|---:|", *lines]


def _rows(log) -> list[dict]:
    return [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]


def compare_logs(first_log, second_log) -> str:
    """Table lines: per task and step scored in both logs on the same examples (same count and seed), the second
    run's main metric minus the first's, paired (and McNemar for rates); for edit also per edit kind."""
    from mtu.stats import paired_difference
    from mtu.toyworld.evaluate import evaluation_set
    from mtu.toyworld.metrics import paired_cells

    def keyed(log):
        return {(row["task"], row["step"], row["count"], row.get("seed", 0), row.get("split", "validation")): row
                for row in _rows(log) if "per_example" in row}

    first, second = keyed(first_log), keyed(second_log)
    lines = ["| task | step | subset | n | second - first (95% CI) | only second / only first | McNemar p |",
             "|---|---:|---|---:|---|---|---:|"]
    for key in sorted(first.keys() & second.keys()):
        task, step, count, _, split = key
        a, b = first[key]["per_example"], second[key]["per_example"]
        label = task if split == "validation" else f"{task} ({split})"
        subsets = {"all": list(range(len(a)))}
        if task == "edit":
            kinds = [example.edit.kind for example in evaluation_set("edit", count, split=split)]
            for kind in dict.fromkeys(kinds):
                subsets[kind] = [i for i, k in enumerate(kinds) if k == kind]
        for name, indices in subsets.items():
            result = paired_difference([b[i] for i in indices], [a[i] for i in indices])
            lines.append(f"| {label} | {step} | {name} | {len(indices)} | {paired_cells(result)} |")
        for field, result in paired_secondary(second[key], first[key]):
            lines.append(f"| {label} | {step} | {field} | {count} | {paired_cells(result)} |")
    return "\n".join(lines)


def _rates(row: dict) -> dict[str, list]:
    """The per-example rates a row kept: its main metric when that is a rate, and its secondary rates."""
    rates = dict(row.get("per_example_secondary", {}))
    if row["main"] != "psnr" and "per_example" in row:
        rates = {row["main"]: row["per_example"], **rates}
    return rates


def across_seeds(log) -> str:
    """Table lines: per task, step, example count and rate scored under two or more seeds, the rate per seed, its
    mean over the seeds (interval: the crossed bootstrap over seeds and examples), and the share of examples that
    succeed under every seed, under some only, and under none; `any` is the best-of-seeds rate, an upper bound for a
    sampler that picked the right draw."""
    import numpy as np

    from mtu.stats import crossed_bootstrap_interval

    groups: dict = {}
    for row in _rows(log):
        for field, outcomes in _rates(row).items():
            groups.setdefault((row["task"], row["step"], row["count"], field), {})[row.get("seed", 0)] = outcomes
    lines = ["| task | step | n | rate | seeds | per seed | mean over seeds (95% CI) | every seed | some | none | any |",
             "|---|---:|---:|---|---:|---|---|---:|---:|---:|---:|"]
    for (task, step, count, field), by_seed in sorted(groups.items()):
        if len(by_seed) < 2:
            continue
        table = np.array([by_seed[seed] for seed in sorted(by_seed)], dtype=float)  # (seeds, examples)
        low, high = crossed_bootstrap_interval(table)
        hits = table.sum(axis=0)
        every, none = float((hits == len(table)).mean()), float((hits == 0).mean())
        lines.append(f"| {task} | {step} | {count} | {field} | {len(table)} | "
                     f"{' '.join(f'{rate:.3f}' for rate in table.mean(axis=1))} | "
                     f"{table.mean():.3f} ({low:.3f}-{high:.3f}) | {every:.3f} | {1 - every - none:.3f} | "
                     f"{none:.3f} | {1 - none:.3f} |")
    return "\n".join(lines)


def table(log, since: int | None = None) -> str:
    rows = _rows(log)
    lines = ["| step | task | n | main metric (95% CI) | other scores |", "|---:|---|---:|---|---|"]
    for row in sorted(rows, key=lambda r: (r["task"], r["step"], r["count"])):
        summary = row["summary"]
        lines.append(f"| {row['step']} | {row['task']} | {row['count']} | {row['main']} {_cell(summary[row['main']])} "
                     f"| {_others(summary, row['main'])} |")
    return "\n".join(lines + paired_steps(rows, since))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--tasks", default="edit,inpaint,sr,t2i")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log", default=None, help="JSON-lines file to append the rows to")
    parser.add_argument("--table", default=None, help="print the log at this path as a table and exit")
    parser.add_argument("--since", type=int, default=None, metavar="STEP",
                        help="with --table: pair each step with STEP (for example the shipped one), not the previous")
    parser.add_argument("--step-offset", type=int, default=0, metavar="N",
                        help="log the checkpoint's step as N + its step (a run restarted from another's final/)")
    parser.add_argument("--inference-steps", type=int, default=None, metavar="N",
                        help="the sampler's steps (default the pipeline's, 20); recorded in the logged rows")
    parser.add_argument("--held-out", default=None, metavar="SAMPLING_JSON",
                        help="score the held-out scenes at the guidance of this sampling.json (a finished run's final "
                             "comparison, never a choice of settings); recorded in the rows")
    parser.add_argument("--compare", nargs=2, default=None, metavar=("FIRST", "SECOND"),
                        help="print the second log's rows against the first's (same task, step, examples) and exit")
    parser.add_argument("--across-seeds", default=None, metavar="LOG",
                        help="print how often each example succeeds across the seeds the log scored it under, and exit")
    args = parser.parse_args(argv)
    if args.since is not None and not args.table:
        parser.error(f"--since {args.since}: only with --table LOG")
    if args.step_offset < 0:
        parser.error(f"--step-offset {args.step_offset}: must be 0 or more")
    if args.inference_steps is not None and args.inference_steps < 1:
        parser.error(f"--inference-steps {args.inference_steps}: must be 1 or more")
    if args.held_out is not None and not Path(args.held_out).is_file():
        parser.error(f"--held-out: no such file {args.held_out!r} (a model folder's sampling.json)")
    if args.table:
        if args.since is not None and args.since not in {row["step"] for row in _rows(args.table)}:
            parser.error(f"--since {args.since}: no row of {args.table} is at that step")
        print(table(args.table, args.since))
        return
    if args.compare:
        print(compare_logs(*args.compare))
        return
    if args.across_seeds:
        print(across_seeds(args.across_seeds))
        return
    import torch

    torch.set_num_threads(args.threads)
    scoring = {} if args.held_out is None else {"split": "test",
                                                "sampling": json.loads(Path(args.held_out).read_text())}
    rows = score_checkpoint(args.checkpoint, args.tasks.split(","), args.count, args.seed, args.step_offset,
                            args.inference_steps, **scoring)
    if args.log:
        append_rows(args.log, rows)
    for row in rows:
        print(row["task"], row["main"], _cell(row["summary"][row["main"]]), f"{row['seconds']} s")


if __name__ == "__main__":
    main()
