"""`make demo` / `mtu demo`: the whole method on the embedded toy world, on a CPU, in minutes.

1. Load the shipped tiny base (a stock Stable Diffusion pipeline pre-trained on toy-world text-to-image).
2. Measure its text-to-image faithfulness on held-out captions (the bar the multi-task model must hold).
3. Upcycle it (N=4 experts per FFN, G=1/4) and train on t2i, edit, sr and inpaint at once with `mtu train`'s
   trainer (the toy world is one of its data sources).
4. Generate every task on held-out examples with `MTUPipeline`, score them with the oracle against each task's
   trivial baseline, and write a report folder: report.html (image grids, metrics, router heatmap like the
   paper's Fig. 5, loss curves), metrics.json, the trained adapter and the run folder.

The report folder is claimed before any work (`mtu.outputs.claim_output`): an existing folder holding anything but
an earlier demo report is refused unless `overwrite`, and even then only the demo's own files are replaced there.

When the package ships its trained adapter ("toyworld", `src/mtu/toyworld/mtu_model/`), the report shows it beside
the live model: its recorded held-out scores (from its recipe.json, not re-measured) and its outputs on the same
gallery examples.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import InputError
from .outputs import claim_output
from .progress import step

# The tasks the demo trains and scores (its choice; what each task is and how it is scored is looked up, `mtu.tasks`).
TASKS = ("t2i", "edit", "sr", "inpaint")

# Edit's and inpaint's (text, image) guidance for the demo's default recipe when it does not choose again
# (`tune_count` 0, the default): what `tune_count=32` chooses for that recipe on 32 validation examples (training-
# split scenes; `benchmarks/demo_guidance.py`, 2026-12-03). On 256 held-out edits the pair gives 0.070 against the
# paper's 7.5 / 1.6's 0.016 (paired +0.055, p 0.003); inpaint's choice is the paper's own pair. Fixing it saves
# the choice's 384 generations, a fifth of the demo's time (docs/BENCHMARKS.md, "Where `mtu demo`'s minutes go").
DEMO_GUIDANCE = {"edit": {"guidance_scale": 3.0, "image_guidance_scale": 5.0},
                 "inpaint": {"guidance_scale": 4.0, "image_guidance_scale": 1.5}}
DEMO_TUNE_COUNT = 32  # the validation examples DEMO_GUIDANCE was chosen on


def _main_record(task: str) -> str:
    """The per-example field of `toyworld.metrics.example_record` that the task's main metric averages."""
    from .tasks import task_plugin

    return task_plugin(task).evaluation.main_record


@dataclass
class DemoConfig:
    """Knobs of the demo; the defaults are what `make demo` runs (about 9-12 minutes on 2 CPU cores).

    Args:
        out: Report folder: new, empty or an earlier demo report (its files are replaced).
        steps: Optimizer steps of multi-task training.
        batch_size: Samples per step (tasks take turns within a batch).
        lr: Peak learning rate (Adam, warm-up then cosine decay).
        eval_count: Held-out examples per task for the gallery and the metrics.
        num_experts: N (granularity 1/N: same parameter count and FLOPs as the base).
        seed: Seeds training and sampling.
        tune_count: Validation examples (training-split scenes, not the held-out ones) on which edit's and
            inpaint's (text, image) guidance is chosen again before the held-out evaluation (6 pairs each); 0 uses
            `DEMO_GUIDANCE`, the pairs that choice makes for the default recipe on 32 examples.
        base: Base pipeline folder; default the shipped toy-world base.
        overwrite: Write into an existing `out` that holds other files too (only the demo's files are replaced;
            nothing else there is removed).
    """

    out: str = "mtu-demo"
    steps: int = 1500
    batch_size: int = 16
    lr: float = 2e-3
    eval_count: int = 64
    num_experts: int = 4
    seed: int = 0
    base: str | None = None
    tune_count: int = 0
    overwrite: bool = False

    def __post_init__(self):
        from .configuration import check_counts

        check_counts(self, ("steps", "batch_size", "eval_count", "num_experts"))
        check_counts(self, ("tune_count",), minimum=0)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise InputError(f"`lr` must be > 0, got {self.lr!r}.")
        if not math.isfinite(self.lr):
            raise InputError(f"`lr` must be finite, got {self.lr!r}.")


def is_demo_report(folder: Path) -> bool:
    """True for a report folder an earlier `mtu demo` wrote (before outputs were marked)."""
    return all((folder / name).is_file() for name in ("report.html", "metrics.json", "router_heatmap.png"))


def load_shipped() -> dict | None:
    """{"folder", "recipe"} of the shipped "toyworld" adapter, or None (said on stderr) where this installation
    lacks it."""
    from .toyworld.components import shipped_model
    from .toyworld.packaging import RECIPE_NAME

    try:
        folder = shipped_model()
    except FileNotFoundError:
        print("      the shipped toy-world model ('toyworld') is not in this installation; the report shows the "
              "live model only", file=sys.stderr)
        return None
    return {"folder": folder, "recipe": json.loads((folder / RECIPE_NAME).read_text())}


def shipped_entry(recipe: dict, task: str) -> dict | None:
    """The shipped model's recorded main figure of `task` ({"field", "value", "low", "high", "count"}), if any."""
    summary = recipe["scores"].get(task, {}).get(_main_record(task))
    if summary is None:
        return None
    return {"field": _main_record(task), **{key: summary[key] for key in ("value", "low", "high", "count")}}


def shipped_outputs(folder, examples: dict[str, list], seed: int) -> dict[str, list]:
    """The shipped model's outputs on `examples` ({task: examples}), sampled with its recorded guidance."""
    from .pipelines import MTUPipeline
    from .toyworld.evaluate import generate_outputs

    pipe = MTUPipeline.from_pretrained(folder)  # reads its sampling.json: the guidance its scores were measured with
    pipe.set_progress_bar_config(disable=True)
    return {task: generate_outputs(pipe, cases, seed) for task, cases in examples.items()
            if task in pipe.unet.task_names}


def shipped_html(shipped: dict, eval_count: int) -> str:
    """The report's paragraph on the shipped model: what it is, how it was trained, what its figures measure."""
    import html

    recipe = shipped["recipe"]
    steps = (recipe.get("train_summary") or {}).get("steps", recipe["config"].get("max_steps"))
    return (f"<p>Shipped model: <code>toyworld</code> (<code>{html.escape(str(shipped['folder']))}</code>), the MTU "
            f"adapter that comes with the package, trained for {steps} steps over <code>"
            f"{html.escape(recipe['base'])}</code> by <code>{html.escape(recipe['command']['train'])}</code> "
            f"(its train.yaml) and scored by <code>{html.escape(recipe['command']['package'])}</code>. Its column "
            f"holds the figures recorded in its recipe.json, measured on the first {recipe['eval_count']} held-out "
            f"examples per task (seed {recipe['seed']}; the live model's: the first {eval_count}), with 95% "
            f"intervals; they are not re-measured here. Its gallery rows are generated here with its recorded "
            f"guidance.</p>")


def print_table(rows: list[dict], shipped: bool) -> None:
    from .toyworld.report import recorded_figure

    extra = f" {'shipped (recorded)':<26}" if shipped else ""
    print(f"\n{'task':<8} {'metric':<13} {'MTU':>8} {'95% interval':>17}{extra} {'baseline':>9}  baseline kind")
    for row in rows:
        mark = "" if row["beats_baseline"] else "   <- does not beat its baseline"
        interval = f"{row['interval'][0]:.3f}-{row['interval'][1]:.3f}"
        extra = f" {recorded_figure(row['shipped']):<26}" if shipped else ""
        print(f"{row['task']:<8} {row['metric']:<13} {row['value']:>8.3f} {interval:>17}{extra} "
              f"{row['baseline_value']:>9.3f}  {row['baseline']}{mark}")


def run_demo(config: DemoConfig | None = None) -> int:
    """Runs the demo (see the module docstring) and writes its report folder `config.out`; returns 0."""
    from .toyworld.components import shipped_base

    config = config or DemoConfig()
    start = time.perf_counter()
    output = claim_output(config.out, command="demo", overwrite=config.overwrite,
                          inputs={"base (`--base`)": config.base}, recognize=is_demo_report)
    base = config.base or str(shipped_base())
    with output.stage() as staging:  # moved into place when the report is complete
        rows, shipped = build_report(config, base, staging, start)
    out = Path(config.out)
    print_table(rows, shipped is not None)
    missing = [row["task"] for row in rows if not row["beats_baseline"]]
    print(f"\n{'every task beats its trivial baseline' if not missing else 'not beating their baselines: ' + ', '.join(missing)}"
          f"\nreport: {(out / 'report.html').resolve()}  ({time.perf_counter() - start:.0f} s)")
    return 0


def build_report(config: DemoConfig, base: str, staging: Path, start: float) -> tuple[list[dict], dict | None]:
    """Trains, scores and writes the report into `staging`; returns (the metric rows, the shipped model or None)."""
    import shutil

    from .toyworld import report
    from .toyworld.evaluate import BASELINE_NAME, MAIN_METRIC, baseline_outputs, evaluation_set, score
    from .toyworld.experiment import score_base, toyworld_train_config, train_and_score
    from .toyworld.metrics import example_record, summarize

    out = Path(config.out)
    torch.manual_seed(config.seed)
    recipe_path = Path(base) / "recipe.json"
    recipe = json.loads(recipe_path.read_text()) if recipe_path.exists() else {}
    shipped = load_shipped()

    examples = {task: evaluation_set(task, config.eval_count) for task in TASKS}
    with step(f"[1/4] base model {base}: t2i faithfulness on {config.eval_count} held-out captions"):
        base_scores, base_outputs = score_base(base, examples["t2i"], config.seed, config.num_experts)
    print(f"      base t2i faithfulness {base_scores['faithfulness']:.3f}", file=sys.stderr)

    choosing = (f"choosing edit/inpaint guidance on {config.tune_count} validation examples" if config.tune_count
                else f"edit/inpaint guidance as chosen for this recipe (--tune-count {DEMO_TUNE_COUNT} chooses again)")
    with step(f"[2/4] upcycling (N={config.num_experts}), training on {', '.join(TASKS)} for {config.steps} steps "
              f"of {config.batch_size}, {choosing}, generating {config.eval_count} held-out examples per task"):
        run_config = toyworld_train_config(base, staging / "run", TASKS, mtu={"num_experts": config.num_experts},
                                           steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                                           seed=config.seed)
        result = train_and_score(run_config, examples, config.seed, tune_guidance=config.tune_count,
                                 guidance=None if config.tune_count else DEMO_GUIDANCE)
        summary, outputs = result["summary"], result["outputs"]
    for task, value in result["guidance"].items():
        how = "chosen on validation" if value["tried"] else "as chosen for this recipe"
        print(f"      {task} guidance {how}: text {value['chosen']['guidance_scale']}, image "
              f"{value['chosen']['image_guidance_scale']}", file=sys.stderr)

    shown = min(8, config.eval_count)
    with step("[3/4] scoring against the trivial baselines"
              + (f", generating the shipped model's first {shown} examples per task" if shipped else "")):
        shipped_shown = {} if shipped is None else shipped_outputs(
            shipped["folder"], {task: examples[task][:shown] for task in TASKS},
            shipped["recipe"].get("seed", config.seed))
        rows = []
        for task in TASKS:
            scores = result["scores"][task]
            baseline = baseline_outputs(examples[task])
            baseline_scores = base_scores if baseline is None else score(examples[task], baseline)
            metric = MAIN_METRIC[task]
            # Per-example records: intervals for the main metric and partial scores (attributes, preserved).
            partial = summarize([example_record(e, o) for e, o in zip(examples[task], outputs[task])], config.seed)
            main = partial[_main_record(task)]
            rows.append({"task": task, "metric": metric, "value": scores[metric], "scores": scores,
                         "interval": [main["low"], main["high"]], "partial": partial,
                         "guidance": result["guidance"].get(task, {}).get("chosen"),
                         "baseline": BASELINE_NAME[task], "baseline_value": baseline_scores[metric],
                         "baseline_scores": baseline_scores,
                         "shipped": None if shipped is None else shipped_entry(shipped["recipe"], task),
                         # a task scored against the base model (t2i) must hold its level; the others must
                         # improve on doing nothing
                         "beats_baseline": scores[metric] >= baseline_scores[metric] if baseline is None
                         else scores[metric] > baseline_scores[metric]})
        weights = {task: {name: values.tolist() for name, values in result["model"].expert_weights(task).items()}
                   for task in TASKS}

    with step(f"[4/4] writing the report to {out}"):
        gallery = staging / "gallery"
        gallery.mkdir()
        grid_sections = []
        for task in TASKS:
            cases = examples[task][:shown]
            extra = [shipped_shown[task]] if task in shipped_shown else []
            if cases[0].image is None:  # nothing to show as the input (t2i): the base model's outputs instead
                rows_ = [[c.target for c in cases], base_outputs[:shown], outputs[task][:shown], *extra]
                legend = ("rows: the caption's exact scene, base model, MTU model (live), shipped model" if extra
                          else "rows: the caption's exact scene, base model, MTU model")
            else:
                rows_ = [[c.image for c in cases], outputs[task][:shown], *extra, [c.target for c in cases]]
                legend = ("rows: input, MTU output (trained live), shipped model output, exact target" if extra
                          else "rows: input, MTU output, exact target")
            report.image_rows(rows_, gallery / f"{task}.png")
            prompts = "".join(f"<li>{c.prompt}</li>" for c in cases if c.prompt)
            grid_sections.append((task, f"<p>{legend}</p><img src='gallery/{task}.png'>"
                                        + (f"<ol>{prompts}</ol>" if prompts else "")))
        report.heatmap_png(weights, staging / "router_heatmap.png")
        seconds = time.perf_counter() - start
        metrics = {"config": config.__dict__, "base": base,
                   "base_recipe_faithfulness": recipe.get("evaluation", {}).get("faithfulness"),
                   "tasks": rows, "all_beat_baselines": all(row["beats_baseline"] for row in rows),
                   "guidance_choice": result["guidance"],
                   "shipped_model": None if shipped is None else {
                       "folder": str(shipped["folder"]), "eval_count": shipped["recipe"]["eval_count"],
                       "command": shipped["recipe"]["command"]},
                   "router_weights": weights, "trainable_parameters": result["trainable"],
                   "train": {"steps": summary["steps"], "history": summary["history"],
                             "nonfinite_skipped": summary["nonfinite_skipped"]},
                   "seconds": round(seconds, 1)}
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=1))
        shutil.copytree(staging / "run" / "final", staging / "adapter")
        intro = (f"<p>Base: <code>{base}</code>. Upcycled to N={config.num_experts} experts per FFN "
                 f"({result['trainable']:,} trainable parameters) and trained on {', '.join(TASKS)} for "
                 f"{config.steps} steps of {config.batch_size} samples; {config.eval_count} held-out examples per "
                 f"task; {seconds:.0f} s in all.</p>")
        report.write_html(staging / "report.html", "mtu demo: multi-task upcycling on the toy world", [
            ("Summary", intro + (shipped_html(shipped, config.eval_count) if shipped else "")
             + report.metrics_table_html(rows) + report.guidance_html(result["guidance"], given=(
                f"the pair chosen for this recipe on {DEMO_TUNE_COUNT} validation examples (<code>--tune-count "
                f"{DEMO_TUNE_COUNT}</code> chooses again among 6 pairs)"))),
            *grid_sections,
            ("Router: expert weights per task (cf. the paper's Fig. 5)",
             "<img src='router_heatmap.png'>" + report.heatmap_html(weights)),
            ("Training loss per task", report.loss_svg(summary["history"], list(TASKS))),
        ])
    return rows, shipped
