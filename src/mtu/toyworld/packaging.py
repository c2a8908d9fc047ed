"""`mtu toyworld package`: a finished toy-world training run made into the adapter folder the package ships
(short name "toyworld"), with its recipe, its held-out scores and a model card.

    mtu train --config train.yaml                  # the run; its config.yaml is kept as train.yaml
    mtu toyworld package --run RUN_DIR             # writes src/mtu/toyworld/mtu_model/ (atomically)

The folder holds the adapter (mtu_config.json, mtu_model.safetensors, recording the base as "toyworld-base"),
sampling.json (the guidance each task was scored with, which `MTUPipeline.from_pretrained` then uses by default),
train.yaml, recipe.json (commands, config, scores with intervals, baselines, guidance choice, versions) and
README.md. Guidance is chosen on validation examples, never on the held-out ones it is scored on.
`reproduce_first32` re-measures the first 32 held-out examples of each task; tests/test_toyworld_packaging.py
compares that with recipe.json's "first32".
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
import time
from fractions import Fraction
from importlib import resources
from pathlib import Path

from ..errors import InputError
from ..tasks.base import EvaluationField

FIRST_COUNT = 32  # held-out examples per task that the test re-measures (one generation batch)
SIZE_LIMIT = 10_000_000  # bytes: the folder ships inside the package
RECIPE_NAME, CARD_NAME, TRAIN_CONFIG_NAME = "recipe.json", "README.md", "train.yaml"
# The model card's fields per task ("exact" of t2i is the oracle's faithfulness); the first is the main metric.
CARD_FIELDS = EvaluationField("card_fields")  # {task: its `Evaluation.card_fields`}, looked up when read
FIELD_NAMES = {"exact": "faithfulness (exact scene)", "success": "success (exact target)",
               "fidelity_psnr": "fidelity PSNR (dB)", "psnr": "PSNR (dB)", "read_back": "read back exactly"}


def default_out() -> Path:
    """Where the shipped adapter lives (`components.shipped_model()`), whether or not it exists yet."""
    return Path(str(resources.files("mtu.toyworld").joinpath("mtu_model")))


def _is_shipped_base(name_or_path) -> bool:
    from .components import SHIPPED_BASE_NAME, shipped_base

    if name_or_path == SHIPPED_BASE_NAME:
        return True
    try:
        return Path(str(name_or_path)).expanduser().resolve() == shipped_base().resolve()
    except FileNotFoundError:  # no shipped base in this installation: the adapter cannot be of it
        return False


def _check_counts(eval_count, tune_count, seed, first_count) -> None:
    for name, value, minimum in (("eval_count", eval_count, 1), ("tune_count", tune_count, 0), ("seed", seed, 0),
                                 ("first_count", first_count, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InputError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    if first_count > eval_count:
        raise InputError(f"`eval_count` must be at least `first_count` ({first_count}): the first {first_count} "
                         f"examples are summarized from the same outputs, got {eval_count}.")


def check_run(run_dir, final: Path | None = None) -> tuple[Path, dict, dict]:
    """(run folder, parsed config.yaml, adapter record of final/) of a finished `mtu train` run; raises first.
    `final`: the adapter folder to check instead of RUN/final (a checkpoint's export)."""
    from ..training.config import read_yaml
    from ..upcycling.serialization import CONFIG_NAME, WEIGHTS_NAME, read_adapter_config
    from .evaluate import scored_tasks

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"`run` {str(run_dir)!r} is not a folder; give the output_dir of an `mtu train` run.")
    config_path, final = run_dir / "config.yaml", final or run_dir / "final"
    if not config_path.is_file():
        raise FileNotFoundError(f"`run` {str(run_dir)!r} holds no config.yaml; is it an `mtu train` output_dir?")
    config = read_yaml(config_path.read_text())
    if not isinstance(config, dict):
        raise InputError(f"{config_path} must hold a mapping, got {type(config).__name__}.")
    if (final / "method.json").is_file():
        method = json.loads((final / "method.json").read_text()).get("method")
        raise InputError(f"{final} holds a {method!r} run's weights; only an MTU adapter (method 'mtu') is packaged.")
    if not (final / CONFIG_NAME).is_file() or not (final / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"`run` {str(run_dir)!r} has no finished adapter: {final} must hold {CONFIG_NAME} "
                                f"and {WEIGHTS_NAME} (the trainer writes them when the run ends).")
    record = read_adapter_config(final)
    unknown = [task for task in record["config"].tasks if task not in scored_tasks()]
    if unknown:
        raise InputError(f"the adapter in {final} has tasks {unknown} that the toy world cannot score; it scores "
                         f"{list(scored_tasks())}.")
    return run_dir, config, record


def is_package(folder: Path) -> bool:
    """True for a folder an earlier `mtu toyworld package` wrote (the shipped one included): recipe and adapter."""
    from ..upcycling.serialization import CONFIG_NAME

    return (folder / RECIPE_NAME).is_file() and (folder / CONFIG_NAME).is_file()


def _check_out(out, shipped_base: bool, run_dir: Path, overwrite: bool):
    """The claimed folder to write (`mtu.outputs.OutputFolder`): a new or empty one, or an earlier package; another
    folder only with `overwrite`, and then only the package's files are replaced there."""
    from ..outputs import claim_output

    folder = Path(out).expanduser() if out is not None else default_out()
    if folder.resolve() == default_out().resolve() and not shipped_base:
        raise InputError(f"the shipped adapter ({folder}) must be made from the shipped toy-world base; this run's "
                         f"adapter records another base. Give --out.")
    return claim_output(folder, command="toyworld package", overwrite=overwrite,
                        inputs={"run (`--run`)": run_dir}, recognize=is_package)


def folder_bytes(folder) -> int:
    """Total size of the files under `folder`."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def _records(examples, outputs) -> list[dict]:
    from .metrics import example_record

    return [example_record(example, output) for example, output in zip(examples, outputs)]


def _scored_guidance(pipe, task: str) -> dict[str, float]:
    """The scales a task samples with by default: what sampling.json records for it (none for sr)."""
    defaults = pipe.task_defaults(task)
    if defaults.guidance == "none":
        return {}
    scales = {"guidance_scale": defaults.guidance_scale}
    if defaults.guidance == "dual":
        scales["image_guidance_scale"] = defaults.image_guidance_scale
    return scales


def _baseline(task: str, examples, base: str, seed: int) -> dict:
    """{"name", "scores"} of the task's trivial baseline on `examples` (for t2i: the base model itself)."""
    from .evaluate import BASELINE_NAME, baseline_outputs
    from .experiment import score_base
    from .metrics import summarize

    outputs = baseline_outputs(examples)
    if outputs is None:  # the base model is the reference (t2i)
        outputs = score_base(base, examples, seed)[1]
    return {"name": BASELINE_NAME[task], "scores": summarize(_records(examples, outputs), seed)}


def evaluate_adapter(pipe, base: str, tasks, eval_count: int, tune_count: int, seed: int,
                     first_count: int = FIRST_COUNT) -> dict:
    """{"sampling", "guidance", "scores", "first32", "baselines"} of `pipe` (an `MTUPipeline` at the paper's
    defaults) on the toy world: guidance of dual-guidance tasks chosen on `tune_count` validation examples, then
    every task scored on its first `eval_count` held-out examples; "first32" summarizes the first `first_count`
    of those same outputs."""
    from .evaluate import evaluation_set, generate_outputs
    from .experiment import choose_guidance
    from .metrics import summarize

    result = {"sampling": {}, "guidance": {}, "scores": {}, "first32": {}, "baselines": {}}
    for task in tasks:
        if tune_count:
            chosen, tried = choose_guidance(pipe, task, tune_count, seed)
            if tried:
                result["guidance"][task] = {"chosen": chosen, "tried": tried}
        sampling = result["guidance"].get(task, {}).get("chosen") or _scored_guidance(pipe, task)
        if sampling:
            result["sampling"][task] = sampling
        examples = evaluation_set(task, eval_count)
        records = _records(examples, generate_outputs(pipe, examples, seed, **sampling))
        result["scores"][task] = summarize(records, seed)
        result["first32"][task] = summarize(records[:first_count], seed)
        result["baselines"][task] = _baseline(task, examples, base, seed)
    return result


def format_interval(summary: dict, field: str) -> str:
    digits = 2 if "psnr" in field else 3
    return f"{summary['value']:.{digits}f} [{summary['low']:.{digits}f}, {summary['high']:.{digits}f}]"


def model_card(recipe: dict, adapter_config: dict) -> str:
    """README.md of a packaged adapter: what it is, how to load it, its held-out scores with 95% intervals."""
    from .components import SHIPPED_BASE_NAME

    tasks = list(recipe["scores"])
    checkpoint = recipe.get("checkpoint")
    if checkpoint:
        max_steps = recipe["config"].get("max_steps")
        trained = (f"trained {checkpoint['step']} of its recipe's {max_steps} steps (the EMA weights of its "
                   f"{checkpoint['folder']}" + (": the run had not ended)" if checkpoint["step"] < max_steps else ")"))
    else:
        trained = f"trained {(recipe.get('train_summary') or {}).get('steps', recipe['config'].get('max_steps'))} steps"
    if recipe.get("starts_from"):
        trained += f", continuing the adapter at {recipe['starts_from']} (its recipe's model.adapter),"
    count = next(iter(recipe["scores"].values()))["exact"]["count"]
    own = (recipe["config"].get("model") or {}).get("task_text_encoders") or []
    own_text = ["", f"Task text encoders ({', '.join(own)}): each of these tasks reads its prompts with its own "
                    f"trained copy of the base's text encoder (text_encoders/<task>/; `model.task_text_encoders`), "
                    f"the other tasks with the base's frozen one."] if own else []
    name = "toyworld" if recipe["base"] == SHIPPED_BASE_NAME else "path/to/this/folder"
    lines = [
        "# toyworld: the MTU adapter for the embedded toy-world base", "",
        f"A multi-task upcycled UNet (N={adapter_config['num_experts']} experts, "
        f"G={Fraction(adapter_config['granularity']).limit_denominator(1024)}, init {adapter_config['init']!r}) "
        f"for the tasks {', '.join(tasks)}, {trained} on the toy world over the base `{recipe['base']}`.",
        *own_text, "", "    from mtu.pipelines import MTUPipeline", f"    pipe = MTUPipeline.from_pretrained({name!r})", "",
        f"    mtu generate --model {name} --task edit --image in.png --prompt \"remove the red circle\" --out out.png",
        "", f"## Held-out scores ({count} examples per task, seed {recipe['seed']}, 95% intervals)", "",
        "| task | metric | this model | trivial baseline |", "|---|---|---|---|",
    ]
    for task in tasks:
        baseline = recipe["baselines"][task]
        for field in CARD_FIELDS[task]:
            if field in recipe["scores"][task]:
                ours, theirs = recipe["scores"][task][field], baseline["scores"][field]
                lines.append(f"| {task} | {FIELD_NAMES.get(field, field)} | {format_interval(ours, field)} "
                             f"| {baseline['name']}: {format_interval(theirs, field)} |")
    lines += ["", "Rates carry Wilson intervals, means bootstrap intervals (`mtu.stats`).", "",
              "## Sampling", "", "Guidance per task, recorded in sampling.json and used by default:", ""]
    lines += [f"- {task}: " + ", ".join(f"{key} {value:g}" for key, value in scales.items())
              for task, scales in recipe["sampling"].items()]
    if recipe["guidance"]:
        lines += ["", "Chosen on validation examples (never the held-out ones): "
                  + ", ".join(recipe["guidance"]) + "; every pair tried is in recipe.json."]
    lines += ["", "## Reproduce", "", f"    {recipe['command']['train']}", f"    {recipe['command']['package']}", "",
              "`tests/test_toyworld_packaging.py::test_shipped_model_reproduces_its_recorded_scores` re-measures the "
              f"first {next(iter(recipe['first32'].values()))['exact']['count']} held-out examples of each task "
              "against recipe.json's \"first32\".", ""]
    return "\n".join(lines)


def _package_command(run_dir, out, eval_count, tune_count, seed) -> str:
    words = ["mtu", "toyworld", "package", "--run", str(run_dir)] + (["--out", str(out)] if out is not None else [])
    words += ["--eval-count", str(eval_count), "--tune-count", str(tune_count), "--seed", str(seed)]
    return shlex.join(words)


def _versions() -> dict:
    import diffusers
    import torch
    import transformers

    from .. import __version__

    return {"mtu": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


def _write_folder(folder: Path, run_dir: Path, final: Path, recipe: dict, adapter_config: dict,
                  shipped_base: bool) -> None:
    from ..pipelines.defaults import SAMPLING_NAME
    from ..upcycling.serialization import CONFIG_NAME, WEIGHTS_NAME
    from ..upcycling.text_encoders import TEXT_ENCODERS_DIR
    from .components import record_shipped_base

    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copyfile(final / name, folder / name)
    if (final / TEXT_ENCODERS_DIR).is_dir():  # the tasks' own text encoders (`model.task_text_encoders`)
        shutil.copytree(final / TEXT_ENCODERS_DIR, folder / TEXT_ENCODERS_DIR)
    if shipped_base:
        record_shipped_base(folder)  # records "toyworld-base" after checking the weights fingerprint
    shutil.copyfile(run_dir / "config.yaml", folder / TRAIN_CONFIG_NAME)
    (folder / SAMPLING_NAME).write_text(json.dumps(recipe["sampling"], indent=2) + "\n")
    (folder / RECIPE_NAME).write_text(json.dumps(recipe, indent=1) + "\n")
    (folder / CARD_NAME).write_text(model_card(recipe, adapter_config))
    size = folder_bytes(folder)
    if size > SIZE_LIMIT:
        raise InputError(f"the packaged model would take {size:,} bytes, over the {SIZE_LIMIT:,} a shipped model "
                         f"may; nothing was written.")


def package_model(run_dir, out=None, eval_count: int = 256, tune_count: int = 32, seed: int = 0, *,
                  first_count: int = FIRST_COUNT, overwrite: bool = False) -> dict:
    """Scores a finished toy-world MTU run and writes it, with recipe and model card, as a shippable folder.

    Args:
        run_dir: The `mtu train` output_dir (config.yaml and final/, the adapter; train_summary.json if any), or one
            of its checkpoints (`RUN/checkpoints/checkpoint-N`: its EMA weights, as final/ would hold them; a run
            that has not ended yet), recorded as such in recipe.json ("checkpoint") and the model card.
        out: Folder to write: new, empty or an earlier package (whose files are replaced); default the shipped
            adapter's folder inside the package, `mtu/toyworld/mtu_model/`.
        eval_count: Held-out examples per task that the scores are measured on.
        tune_count: Validation examples on which edit/inpaint guidance is chosen; 0 keeps the paper's.
        seed: Seed of the sampling noise and of the bootstrap intervals.
        first_count: The leading held-out examples summarized again as "first32" (what the test re-measures).
        overwrite: Write into an existing folder holding other files too (only the package's files are
            replaced there; nothing else is removed).
    Returns:
        The recipe written to recipe.json, plus "folder": the folder written.
    """
    start = time.perf_counter()
    _check_counts(eval_count, tune_count, seed, first_count)
    with tempfile.TemporaryDirectory(prefix="mtu-package-") as scratch:
        return _package(Path(run_dir).expanduser(), Path(scratch), out, eval_count, tune_count, seed, first_count,
                        overwrite, start)


def _package(source: Path, scratch: Path, out, eval_count: int, tune_count: int, seed: int, first_count: int,
             overwrite: bool, start: float) -> dict:
    from ..training.checkpoint import checkpoint_step
    from ..training.export import checkpoint_run_config, export_checkpoint, is_checkpoint_folder
    from ..upcycling import load_mtu
    from .components import SHIPPED_BASE_NAME
    from .experiment import pipeline_for

    checkpoint = None
    if is_checkpoint_folder(source):
        method = checkpoint_run_config(source).model.method  # before the weights are read
        if method != "mtu":
            raise InputError(f"{source} is a checkpoint of a {method!r} run; only an MTU adapter (method 'mtu') is "
                             f"packaged.")
        checkpoint = {"folder": f"checkpoints/{source.name}", "step": checkpoint_step(source)}
        run_dir, final = source.parent.parent, export_checkpoint(source, scratch / "final")
    else:
        run_dir, final = source, None
    run_dir, config, record = check_run(run_dir, final)
    final = final or run_dir / "final"
    base = record["base"].get("name_or_path")
    if not base:
        raise InputError(f"the adapter of {source if checkpoint else final} records no base pipeline to score it on.")
    shipped_base = _is_shipped_base(base)
    output = _check_out(out, shipped_base, run_dir, overwrite)

    model = load_mtu(final).eval()
    result = evaluate_adapter(pipeline_for(model, base), base, model.task_names, eval_count, tune_count, seed,
                              first_count)
    summary_path = run_dir / "train_summary.json"
    starts_from = (config.get("model") or {}).get("adapter")  # a run that continued another run's adapter
    notes = [f"to step {checkpoint['step']}: the model is {checkpoint['folder']}'s EMA weights"] if checkpoint else []
    notes += [f"continuing the adapter at {starts_from} (model.adapter)"] if starts_from else []
    train_command = f"mtu train --config {TRAIN_CONFIG_NAME}" + ("  # " + "; ".join(notes) if notes else "")
    recipe = {
        "command": {"train": train_command,
                    "package": _package_command(source, out, eval_count, tune_count, seed)},
        "config": config, "base": SHIPPED_BASE_NAME if shipped_base else base, "seed": seed,
        "eval_count": eval_count, "tune_count": tune_count, "first_count": first_count, "checkpoint": checkpoint,
        "starts_from": starts_from,
        "train_summary": (json.loads(summary_path.read_text()) if summary_path.is_file() and not checkpoint
                          else None),
        **{key: result[key] for key in ("sampling", "scores", "first32", "baselines", "guidance")},
        "versions": _versions(),
    }
    recipe["seconds"] = round(time.perf_counter() - start, 1)
    adapter_config = record["config"].to_dict()
    output.write(lambda staging: _write_folder(staging, run_dir, final, recipe, adapter_config, shipped_base))
    folder = Path(out).expanduser() if out is not None else default_out()
    return {**recipe, "folder": str(folder)}


def reproduce_first32(name_or_path="toyworld", count: int = FIRST_COUNT) -> dict:
    """{task: summary} of a packaged adapter on its first `count` held-out examples per task, loaded by
    `MTUPipeline.from_pretrained` (so with its sampling.json guidance) and sampled with its recorded seed: what
    recipe.json's "first32" holds when `count` is the packaged `first_count`."""
    from ..pipelines import MTUPipeline
    from ..upcycling.serialization import adapter_directory
    from .evaluate import evaluation_set, generate_outputs, scored_tasks
    from .metrics import summarize

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"`count` must be an integer >= 1, got {count!r}.")
    recipe_path = adapter_directory(name_or_path) / RECIPE_NAME
    if not recipe_path.is_file():
        raise FileNotFoundError(f"{str(name_or_path)!r} is not a packaged toy-world model: {recipe_path} is missing.")
    seed = json.loads(recipe_path.read_text())["seed"]
    pipe = MTUPipeline.from_pretrained(name_or_path)
    pipe.set_progress_bar_config(disable=True)
    summaries = {}
    for task in pipe.unet.task_names:
        if task in scored_tasks():
            examples = evaluation_set(task, count)
            summaries[task] = summarize(_records(examples, generate_outputs(pipe, examples, seed)), seed)
    return summaries
