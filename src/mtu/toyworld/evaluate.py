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

from .metrics import example_record, summarize
from .oracle import edit_fidelity, edit_success, inpaint_preserved, inpaint_removed, sr_psnr, sr_ssim, t2i_faithful
from .scene import Scene, caption, heldout_scenes, make_scenes, render
from .tasks import TASKS, Edit, sample_edit, sample_removal, sr_input

EVAL_SEED = 1234
VALIDATION_SEED = 4321  # the validation split: train-split scenes from their own seed (for choosing settings)
# Each task's main metric (the one the report compares against the trivial baseline) and its direction.
MAIN_METRIC = {"t2i": "faithfulness", "edit": "success", "sr": "psnr", "inpaint": "success"}
# The field of `metrics.example_record` holding each task's main metric per example (its mean over the examples is
# `score`'s main metric; sr's PSNR is capped at `metrics.PSNR_CAP` there, so identical images stay finite).
MAIN_RECORD = {"t2i": "exact", "edit": "success", "sr": "psnr", "inpaint": "success"}
BASELINE_NAME = {"t2i": "base model", "edit": "identity (input unchanged)", "sr": "bicubic upsampling",
                 "inpaint": "identity (input unchanged)"}


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
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")
    if split not in ("test", "validation"):
        raise ValueError(f"`split` must be 'test' or 'validation', got {split!r}.")
    if split == "test":
        seed, scenes = EVAL_SEED, heldout_scenes(count)
    else:
        seed, scenes = VALIDATION_SEED, make_scenes(VALIDATION_SEED, count, "train")
    rng = np.random.default_rng([seed, TASKS.index(task)])
    examples = []
    for index, scene in enumerate(scenes):
        if task == "t2i":
            examples.append(Example(task, caption(scene), None, render(scene, size), scene))
        elif task == "sr":
            target = render(scene, size)
            examples.append(Example(task, None, sr_input(target, seed=seed + index, scale=sr_scale), target,
                                    scene))
        else:
            edit = sample_removal(scene, rng) if task == "inpaint" else sample_edit(scene, rng)
            examples.append(Example(task, edit.instruction, render(edit.before, size), render(edit.after, size),
                                    edit.after, edit))
    return examples


@torch.no_grad()
def generate_outputs(pipe, examples: list[Example], seed: int = 0, batch_size: int = 32, stock: bool = False,
                     **call_kwargs) -> list:
    """Outputs of `pipe(task=...)` for `examples`, in batches, one generator per example seeded (seed, index).
    `stock`: `pipe` is a stock diffusers pipeline of the examples' task, called without `task`."""
    outputs = []
    for begin in range(0, len(examples), batch_size):
        chunk = examples[begin:begin + batch_size]
        task = chunk[0].task
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + begin + i) for i in range(len(chunk))]
        kwargs = dict(call_kwargs)
        if task != "sr":
            kwargs["prompt"] = [example.prompt for example in chunk]
        if task != "t2i":
            kwargs["image"] = [example.image for example in chunk]
        if not stock:
            kwargs["task"] = task
        outputs += pipe(generator=generators, **kwargs).images
    return outputs


def baseline_outputs(examples: list[Example]) -> list | None:
    """The trivial baseline's outputs: the input image (edit, inpaint), bicubic upsampling (sr); None for t2i."""
    outputs = []
    for example in examples:
        if example.task == "t2i":
            return None
        if example.task == "sr":
            outputs.append(example.image.resize(example.target.size, Image.BICUBIC))
        else:
            outputs.append(example.image.copy())
    return outputs


def score(examples: list[Example], outputs: list) -> dict[str, float]:
    """The oracle's scores of `outputs` (means over the examples)."""
    if len(outputs) != len(examples):
        raise ValueError(f"`outputs` must have one image per example ({len(examples)}), got {len(outputs)}.")
    task = examples[0].task
    if task == "t2i":
        return {"faithfulness": float(np.mean([t2i_faithful(o, e.target_scene) for o, e in zip(outputs, examples)]))}
    if task == "sr":
        return {"psnr": float(np.mean([sr_psnr(o, e.target) for o, e in zip(outputs, examples)])),
                "ssim": float(np.mean([sr_ssim(o, e.target) for o, e in zip(outputs, examples)]))}
    fidelity = [min(edit_fidelity(o, e.target), 100.0) for o, e in zip(outputs, examples)]  # identical: capped
    if task == "edit":
        return {"success": float(np.mean([edit_success(o, e.target_scene) for o, e in zip(outputs, examples)])),
                "fidelity_psnr": float(np.mean(fidelity))}
    removed = [inpaint_removed(o, e.edit.shape) for o, e in zip(outputs, examples)]
    preserved = [inpaint_preserved(o, e.target) for o, e in zip(outputs, examples)]
    return {"success": float(np.mean([r and p for r, p in zip(removed, preserved)])),
            "removed": float(np.mean(removed)), "preserved": float(np.mean(preserved)),
            "fidelity_psnr": float(np.mean(fidelity))}


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
    field = MAIN_RECORD[examples[0].task]
    convert = float if field == "psnr" else bool  # plain Python values: they go to JSON
    return {"main": [convert(record[field]) for record in records], "records": records,
            "summary": summarize(records, seed)}
