"""`evaluate`: generate a task's outputs for a data set to disk, resumably, then score them; what `mtu eval` runs.

    1. Check everything (model, task, data, metrics, their weights, the sample count, the output folder) before any
       model weights load.
    2. Load the metric networks (a download that fails stops here, before any image is generated).
    3. Generate each missing image `OUT/images/<index>.png` (written under a staging name, then renamed), in
       batches aligned to `batch_size`, each example with its own generator seeded (seed, index): a killed run,
       started again, generates only what is missing and gives the same images.
    4. Score the images as read back from disk, and write `OUT/results.json` (see `report.py`).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..upcycling.files import atomic_write_text
from .data import EvalData, EvalExample, open_eval_data
from .metrics import Metric, ScoringBatch, get_metric
from .report import build_results, settings_record
from .weights import MetricWeights, RandomNetworksFolder, check_metric_weights, feature_dim, load_networks, \
    require_torchmetrics, resolve_metric_weights

IMAGES = "images"
SETTINGS_NAME = "eval.json"  # what decides the images; a resume must match it
RESULTS_NAME = "results.json"
SCORE_BATCH = 32
SEED_STRIDE = 1_000_003  # example i of seed s draws its noise from seed s * SEED_STRIDE + i (as toyworld.evaluate)


@dataclass
class EvalPlan:
    """An evaluation, checked: everything `generate_images` and `score_images` need."""

    model: str
    source: object  # mtu.pipelines.generate.ModelSource
    family: str
    task: str
    data: EvalData
    metrics: list[Metric]
    weights: MetricWeights
    sampling: dict  # guidance, num_inference_steps, guidance_scale, image_guidance_scale: as generated
    call_kwargs: dict  # the sampling arguments given (the rest are the pipeline's defaults, as `sampling` says)
    folder: Path
    seed: int
    batch_size: int
    device: torch.device
    dtype: str | None
    force: bool
    safety_checker: bool

    def image_path(self, index: int) -> Path:
        return self.folder / IMAGES / f"{index:06d}.png"

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(network for metric in self.metrics for network in metric.networks))


def _integer(name: str, value, minimum: int, optional: bool = False):
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _sampling(source, family: str, task: str, steps, guidance_scale, image_guidance_scale) -> tuple[dict, dict]:
    """(the sampling settings as generated: those given, else the task's defaults for this model; the arguments
    given, which the pipeline's own checks see)."""
    from ..pipelines.defaults import task_defaults, with_overrides

    spec = next(spec for spec in source.specs if spec.name == task)
    defaults = with_overrides(task_defaults(family, spec), source.sampling.get(task))
    given = {"num_inference_steps": steps, "guidance_scale": guidance_scale,
             "image_guidance_scale": image_guidance_scale}
    for name in ("guidance_scale", "image_guidance_scale"):
        value = given[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            raise InputError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    unguided = defaults.guidance == "none"
    resolved = {"guidance": defaults.guidance, "num_inference_steps": defaults.num_inference_steps,
                "guidance_scale": None if unguided else defaults.guidance_scale,
                "image_guidance_scale": defaults.image_guidance_scale}
    resolved.update({key: value for key, value in given.items() if value is not None})
    return resolved, {key: value for key, value in given.items() if value is not None}


def _task_metrics(task: str, data: EvalData) -> list[Metric]:
    from ..tasks.base import task_plugin

    names = task_plugin(task).metrics
    if not names and not data.oracle:
        raise InputError(f"task {task!r} names no metrics (its plug-in's `Task.metrics`) and `data` is not the toy "
                         f"world (whose oracle scores every task it has); nothing would be scored.")
    return [get_metric(name) for name in names]


def check_sample_count(metrics: list[Metric], weights: MetricWeights, count: int, force: bool) -> None:
    """FID on d-dimensional features needs more than d samples (below that the covariance is singular and the
    value meaningless); refused unless `force`."""
    for metric in metrics:
        if metric.min_features_factor and not force:
            needed = feature_dim(weights) + 1
            if count < needed:
                name = metric.random_label if weights.random else metric.label
                raise InputError(f"`num_samples` {count} is too few for {name}: its {needed - 1}-d features need at "
                                 f"least {needed} samples for a non-singular covariance (published FIDs use 10k-50k); "
                                 f"use more samples, or force=True (--force) to compute it anyway, marked forced.")


def _claim_folder(out, overwrite: bool, plan_inputs: dict, settings: dict, stack: ExitStack) -> tuple[Path, bool]:
    """The output folder (a temporary one when `out` is None) and whether its images are of other settings (then
    removed by `evaluate` before the new settings are recorded, so a resumed run never mixes the two)."""
    import json

    from ..outputs import claim_output

    if out is None:
        return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mtu-eval-"))), False
    folder = claim_output(out, command="eval", overwrite=overwrite, inputs=plan_inputs).create()
    earlier = folder / SETTINGS_NAME
    if earlier.is_file():
        recorded = json.loads(earlier.read_text())
        changed = [key for key in settings if recorded.get(key) != settings[key]]
        if changed and not overwrite:
            key = changed[0]
            raise InputError(f"{str(out)!r} holds the images of another evaluation ({key}: {recorded.get(key)!r} "
                             f"there, {settings[key]!r} now); choose another folder, or --overwrite to generate them "
                             f"again.", field="--out")
        return folder, bool(changed)
    return folder, False


def plan_evaluation(model, task: str, data, *, num_samples=None, out=None, metric_weights=None, seed: int = 0,
                    force: bool = False, steps=None, guidance_scale=None, image_guidance_scale=None,
                    batch_size: int = 8, device=None, dtype=None, base=None, variant=None, overwrite: bool = False,
                    safety_checker: bool = True, stack: ExitStack) -> tuple[EvalPlan, bool]:
    """Checks every argument of `evaluate` (no model weights load); returns the plan and whether the images in the
    output folder are of other settings."""
    from ..pipelines.generate import DTYPES, check_device, read_model_source

    num_samples = _integer("num_samples", num_samples, 1, optional=True)
    seed, batch_size = _integer("seed", seed, 0), _integer("batch_size", batch_size, 1)
    steps = _integer("steps", steps, 1, optional=True)
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"`dtype` must be one of {DTYPES}, got {dtype!r}.")
    torch_device = check_device(device)
    source = read_model_source(model, base, variant)
    tasks = [spec.name for spec in source.specs]
    if task not in tasks:
        raise InputError(f"`task` {task!r} is not a task of the model {str(model)!r}; its tasks: {tasks}.")
    family = source.family
    sampling, call_kwargs = _sampling(source, family, task, steps, guidance_scale, image_guidance_scale)
    eval_data = open_eval_data(data, task, num_samples)
    if eval_data.length == 0:
        raise InputError(f"{str(data)!r} holds no examples.", field="--data")
    metrics = _task_metrics(task, eval_data)
    if metrics:
        require_torchmetrics()
    weights = resolve_metric_weights(metric_weights)
    if weights.random and weights.root is None:  # `random`: tiny networks in a temporary folder
        weights = stack.enter_context(RandomNetworksFolder(seed))
    check_metric_weights(weights, tuple(dict.fromkeys(n for metric in metrics for n in metric.networks)))
    check_sample_count(metrics, weights, eval_data.length, force)
    settings = settings_record(str(model), task, eval_data.describe, seed, sampling, dtype)
    folder, stale = _claim_folder(out, overwrite, {"model (`--model`)": source.folder, "data (`--data`)": data},
                                  settings, stack)
    plan = EvalPlan(str(model), source, family, task, eval_data, metrics, weights, sampling, call_kwargs, folder, seed,
                    batch_size, torch_device, dtype, force, safety_checker)
    return plan, stale


def _load_pipeline(plan: EvalPlan):
    """The model's pipeline, as `mtu generate` loads it."""
    from ..pipelines.generate import load_pipeline

    pipe = load_pipeline(plan.source, torch_dtype=getattr(torch, plan.dtype) if plan.dtype else None,
                         device=plan.device, safety_checker=plan.safety_checker)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _stack_images(images: list):
    """PIL images as a list, tensors (3, R, R) as one (B, 3, R, R) batch."""
    return torch.stack(images) if isinstance(images[0], torch.Tensor) else images


def _generate_batch(plan: EvalPlan, pipe, examples: list[EvalExample]) -> list:
    from ..tasks.base import task_plugin

    spec = task_plugin(plan.task).spec
    kwargs = dict(plan.call_kwargs)
    if spec.uses_prompt:
        kwargs["prompt"] = [example.prompt or "" for example in examples]
    if "image" in spec.image_inputs or "masked_image" in spec.image_inputs:
        kwargs["image"] = _stack_images([example.image for example in examples])
    if "mask" in spec.image_inputs:
        kwargs["mask_image"] = torch.stack([example.mask.float() for example in examples])
    height, width = examples[0].target.shape[-2:]
    generators = [torch.Generator().manual_seed(plan.seed * SEED_STRIDE + example.index) for example in examples]
    output = pipe(plan.task, height=int(height), width=int(width), generator=generators, **kwargs)
    if any(getattr(output, "nsfw_content_detected", None) or []):
        print("mtu eval: the base's safety checker blacked out flagged images (as diffusers' pipelines do); "
              "--no-safety-checker runs without it.", file=sys.stderr)
    return output.images


def remove_images(plan: EvalPlan) -> None:
    """Removes the images an earlier `mtu eval` wrote into the folder (`images/NNNNNN.png`, nothing else)."""
    for path in (plan.folder / IMAGES).glob("*.png"):
        if len(path.stem) == 6 and path.stem.isdigit():
            path.unlink()


def generate_images(plan: EvalPlan, on_image=None) -> int:
    """Generates every missing image of `plan`; returns how many it generated. `on_image(index, path)` is called
    after each image is in place."""
    from ..pipelines.generate import save_png_atomic

    pipe, generated, count = None, 0, plan.data.length
    for begin in range(0, count, plan.batch_size):  # aligned batches: a resumed batch is the same batch
        indices = range(begin, min(begin + plan.batch_size, count))
        if all(plan.image_path(index).is_file() for index in indices):
            continue
        examples = [example for example in map(plan.data.read, indices) if example is not None]
        if not examples:
            continue
        pipe = pipe or _load_pipeline(plan)
        for example, image in zip(examples, _generate_batch(plan, pipe, examples)):
            path = plan.image_path(example.index)
            if not path.is_file():
                save_png_atomic(image, path)
                generated += 1
                if on_image is not None:
                    on_image(example.index, path)
        print(f"mtu eval: {min(begin + plan.batch_size, count)}/{count} examples have images", file=sys.stderr)
    return generated


def _read_png(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


def _scoring_batch(examples: list[EvalExample], outputs: list[torch.Tensor], networks: dict) -> ScoringBatch:
    def all_or_none(values):
        return None if any(value is None for value in values) else values

    inputs = all_or_none([example.input_uint8 for example in examples])
    masks = all_or_none([example.mask for example in examples])
    prompts = all_or_none([example.prompt for example in examples])
    return ScoringBatch(torch.stack(outputs), torch.stack([example.target for example in examples]),
                        torch.stack(inputs) if inputs and len({x.shape for x in inputs}) == 1 else None,
                        prompts, all_or_none([example.input_caption for example in examples]),
                        all_or_none([example.output_caption for example in examples]),
                        torch.stack(masks) if masks else None, networks)


def score_images(plan: EvalPlan, networks: dict) -> tuple[dict, dict | None, int]:
    """Scores the images on disk: ({metric name: result or {"skipped": why}}, the oracle's summary or None,
    the number of examples scored)."""
    accumulators = {metric.name: metric.make(networks, plan.data.length, plan.seed) for metric in plan.metrics}
    skipped, toy_examples, toy_outputs, scored = {}, [], [], 0
    for begin in range(0, plan.data.length, SCORE_BATCH):
        pairs = [(example, plan.image_path(example.index)) for example in
                 map(plan.data.read, range(begin, min(begin + SCORE_BATCH, plan.data.length))) if example is not None]
        if not pairs:
            continue
        examples = [example for example, _ in pairs]
        outputs = [_read_png(path) for _, path in pairs]
        batch = _scoring_batch(examples, outputs, networks)
        for metric in plan.metrics:
            missing = [role for role in metric.needs if not batch.has(role)]
            if missing and metric.name not in skipped:
                skipped[metric.name] = f"some examples have no {missing[0]} (e.g. {examples[0].key!r})"
            if metric.name not in skipped:
                with torch.no_grad():
                    accumulators[metric.name].update(batch)
        if plan.data.oracle:
            toy_examples += [example.toy for example in examples]
            toy_outputs += [output.permute(1, 2, 0).numpy() for output in outputs]
        scored += len(examples)
    results = {name: {"skipped": skipped[name]} if name in skipped else accumulator.compute()
               for name, accumulator in accumulators.items()}
    oracle = None
    if plan.data.oracle:
        from ..toyworld.evaluate import score_examples

        oracle = score_examples(toy_examples, toy_outputs, seed=plan.seed)["summary"]
    return results, oracle, scored


def evaluate(model, task: str, data="toyworld", *, num_samples: int | None = None, out=None, metric_weights=None,
             seed: int = 0, force: bool = False, steps: int | None = None, guidance_scale: float | None = None,
             image_guidance_scale: float | None = None, batch_size: int = 8, device: str | None = None,
             dtype: str | None = None, base=None, variant: str | None = None, overwrite: bool = False,
             safety_checker: bool = True, on_image=None) -> dict:
    """Generates `task`'s outputs of `model` on `data` and scores them with the task's metrics (`Task.metrics`) and,
    on the toy world, its oracle.

    Args:
        model: What `mtu generate --model` takes: an adapter, pipeline, run or checkpoint folder, or "toyworld".
        task: One of the model's tasks.
        data: "toyworld", a source YAML, or a data folder/file (`mtu.evaluation.data`).
        num_samples: Examples to evaluate (the first ones of `data`); default all (toy world: 256).
        out: Folder for the images and results.json; a run killed half way resumes there. None: a temporary
            folder (nothing kept).
        metric_weights: A folder of metric weights, "random", or None (`$MTU_METRIC_WEIGHTS`, else online).
        seed: Seed of each example's noise (seed * 1000003 + index) and of the bootstrap intervals.
        force: Compute FID below its minimum sample count (marked forced).
        steps, guidance_scale, image_guidance_scale: Override the task's sampling defaults.
        batch_size: Images generated per pipeline call.
        device, dtype, base, variant, safety_checker: As `mtu generate`.
        overwrite: Write into an --out folder holding other files, or regenerate images of other settings.
        on_image: `(index, path)` called after each image is written.
    Returns:
        The results (`report.build_results`), also written to OUT/results.json.
    """
    with ExitStack() as stack:
        start = time.perf_counter()
        plan, stale = plan_evaluation(
            model, task, data, num_samples=num_samples, out=out, metric_weights=metric_weights, seed=seed,
            force=force, steps=steps, guidance_scale=guidance_scale, image_guidance_scale=image_guidance_scale,
            batch_size=batch_size, device=device, dtype=dtype, base=base, variant=variant, overwrite=overwrite,
            safety_checker=safety_checker, stack=stack)
        networks, sources = load_networks(plan.weights, plan.networks, plan.device)
        if stale:  # --overwrite over the images of other settings
            remove_images(plan)
        atomic_write_text(plan.folder / SETTINGS_NAME, _settings_json(plan))
        generating = time.perf_counter()
        generated = generate_images(plan, on_image)
        scoring = time.perf_counter()
        metrics, oracle, scored = score_images(plan, networks)
        seconds = {"setup": generating - start, "generate": scoring - generating,
                   "score": time.perf_counter() - scoring}
        results = build_results(plan, metrics, oracle, scored, generated, sources, seconds)
        if out is not None:
            import json

            atomic_write_text(plan.folder / RESULTS_NAME, json.dumps(results, indent=1) + "\n")
        return results


def _settings_json(plan: EvalPlan) -> str:
    import json

    record = settings_record(plan.model, plan.task, plan.data.describe, plan.seed, plan.sampling, plan.dtype)
    return json.dumps(record, indent=1) + "\n"
