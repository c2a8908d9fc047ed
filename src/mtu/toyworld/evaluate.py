"""Held-out evaluation of every task on the toy world: fixed examples, model outputs, trivial baselines, scores.

`evaluation_set(task, count)` draws the same examples every time (held-out scenes, fixed edits and degradations);
`generate_outputs` runs an `MTUPipeline` on them with per-example seeds; `baseline_outputs` gives each task's
trivial baseline (the input unchanged for edit and inpaint, bicubic upsampling for sr, and for t2i the base model
is the reference); `score` applies the oracle, and `score_examples` keeps the per-example outcomes behind its means
(for intervals and paired comparisons). The demo and the quality benchmark share all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..tasks.base import EvaluationField, scored_tasks, seed_index, task_plugin
from ..upcycling.tasks import available_tasks
from .metrics import example_record, summarize
from .scene import Scene, heldout_scenes, make_scenes
from .tasks import TASKS, Edit  # noqa: F401 (TASKS: the order reports list the tasks in, re-exported)

EVAL_SEED = 1234
VALIDATION_SEED = 4321  # the validation split: train-split scenes from their own seed (for choosing settings)


# Each task's main metric (the one the report compares against the trivial baseline), the field of
# `metrics.example_record` holding it per example, and the baseline's name: the tasks' `Evaluation`s, as mappings.
MAIN_METRIC = EvaluationField("main_metric")
MAIN_RECORD = EvaluationField("main_record")
BASELINE_NAME = EvaluationField("baseline_name")


def _evaluation(task: str):
    evaluation = task_plugin(task).evaluation if task in available_tasks() else None
    if evaluation is None:
        raise ValueError(f"`task` must be one of {scored_tasks()}, got {task!r}.")
    return evaluation


@dataclass
class Example:
    """One held-out example: the pipeline's inputs, the exact target and what scoring needs."""

    task: str
    prompt: str | None
    image: Image.Image | None  # the condition (input image; for sr the low-resolution image)
    target: Image.Image
    target_scene: Scene
    edit: Edit | None = None


def evaluation_set(task: str, count: int, size: int = 32, sr_scale: int = 2, split: str = "test") -> list[Example]:
    """`count` fixed examples of `task` at `size` px (sr: the target is `size`, the input smaller).

    `split`: "test", the held-out scenes every reported figure is measured on; or "validation", scenes of the
    training split from a seed of their own, on which settings such as guidance are chosen (never on "test").
    """
    evaluation = _evaluation(task)
    if split not in ("test", "validation"):
        raise ValueError(f"`split` must be 'test' or 'validation', got {split!r}.")
    if split == "test":
        seed, scenes = EVAL_SEED, heldout_scenes(count)
    else:
        seed, scenes = VALIDATION_SEED, make_scenes(VALIDATION_SEED, count, "train")
    # The built-in tasks keep their historical index (their order in `TASKS`), so their examples never change.
    rng = np.random.default_rng([seed, seed_index(task_plugin(task))])
    return [evaluation.example(task, scene, rng, index=index, seed=seed, size=size, sr_scale=sr_scale)
            for index, scene in enumerate(scenes)]


@torch.no_grad()
def generate_outputs(pipe, examples: list[Example], seed: int = 0, batch_size: int = 32, stock: bool = False,
                     indices: list[int] | None = None, chunk_kwargs=None, **call_kwargs) -> list:
    """Outputs of `pipe(task=...)` for `examples`, in batches, one generator per example seeded (seed, index).
    `stock`: `pipe` is a stock diffusers pipeline of the examples' task, called without `task`.
    `indices`: each example's index in the evaluation set it was taken from (default: its place in `examples`),
    so that a subset of a set, or several variants of one example, keep the noise of the whole set's run.
    `chunk_kwargs`: a function of a batch's examples giving more per-example call arguments (e.g. `mask_image`)."""
    if indices is None:
        indices = list(range(len(examples)))
    if len(indices) != len(examples):
        raise ValueError(f"`indices` must hold one index per example ({len(examples)}), got {len(indices)}.")
    outputs = []
    for begin in range(0, len(examples), batch_size):
        chunk = examples[begin:begin + batch_size]
        task = chunk[0].task
        spec = task_plugin(task).spec
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + index)
                      for index in indices[begin:begin + batch_size]]
        kwargs = dict(call_kwargs)
        if spec.uses_prompt:
            kwargs["prompt"] = [example.prompt for example in chunk]
        if spec.image_inputs:
            kwargs["image"] = [example.image for example in chunk]
        if not stock:
            kwargs["task"] = task
        if chunk_kwargs is not None:
            kwargs.update(chunk_kwargs(chunk))
        outputs += pipe(generator=generators, **kwargs).images
    return outputs


def baseline_outputs(examples: list[Example]) -> list | None:
    """The trivial baseline's outputs (the task's `Evaluation.baseline`: the input image for edit and inpaint,
    bicubic upsampling for sr); None where the base model is the reference (t2i)."""
    baseline = _evaluation(examples[0].task).baseline if examples else None
    return None if baseline is None else [baseline(example) for example in examples]


def score(examples: list[Example], outputs: list) -> dict[str, float]:
    """The oracle's scores of `outputs` (means over the examples; the task's `Evaluation.score`)."""
    if len(outputs) != len(examples):
        raise ValueError(f"`outputs` must have one image per example ({len(examples)}), got {len(outputs)}.")
    return _evaluation(examples[0].task).score(examples, outputs)


def score_examples(examples: list[Example], outputs: list, seed: int = 0) -> dict:
    """Per-example scores of `outputs`, for intervals and for paired comparisons on the same examples.

    Args:
        examples: Non-empty list of examples of one task.
        outputs: One output image per example.
        seed: Seed of the bootstrap intervals of `metrics.summarize`.

    Returns:
        {"main": the task's main metric per example (bools for the rates, floats for sr's PSNR capped at
        `metrics.PSNR_CAP`; field `MAIN_RECORD[task]` of the records), "records": `metrics.example_record` per
        example, "summary": `metrics.summarize` of the records (rates with Wilson intervals, means with bootstrap
        ones)}.
    """
    if not examples:
        raise ValueError(f"`examples` must be a non-empty list of examples, got {examples!r}.")
    if len(outputs) != len(examples):
        raise ValueError(f"`outputs` must have one image per example ({len(examples)}), got {len(outputs)}.")
    records = [example_record(example, output) for example, output in zip(examples, outputs)]
    field = _evaluation(examples[0].task).main_record
    convert = float if field == "psnr" else bool  # plain Python values: they go to JSON
    return {"main": [convert(record[field]) for record in records], "records": records,
            "summary": summarize(records, seed)}
