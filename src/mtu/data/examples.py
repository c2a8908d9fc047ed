"""The example dict every dataset item is, how it is built from decoded fields, and how a batch is collated.

An example:
    {"task": str,
     "target": FloatTensor (3, R, R) in [-1, 1],
     "condition": FloatTensor (3, R, R) in [-1, 1]       -- only for tasks with image inputs,
     "mask": FloatTensor (1, R, R) in {0, 1}, 1 = fill    -- only for tasks whose inputs include "mask",
     "prompt": str ("" for tasks that do not use a prompt),
     "input_caption": str, "output_caption": str          -- only when the source has them,
     "key": str}                                          -- file name or row id, for reports
"""

from __future__ import annotations

import torch
from PIL import Image

from ..upcycling.tasks import TaskSpec
from .degradation import DegradationConfig
from .imaging import fit_square, match_size, to_tensor
from .schemas import Schema


def _to_signed(image: torch.Tensor) -> torch.Tensor:
    return image * 2.0 - 1.0  # [0, 1] -> [-1, 1], the VAE's input range


def make_example(task: TaskSpec, schema: Schema, fields: dict, key: str, resolution: int,
                 generator: torch.Generator, sr_scale: int = 2,
                 degradation: DegradationConfig | None = None) -> dict:
    """Builds the example dict from decoded fields.

    Args:
        task: The task the example trains.
        schema: The source's schema (tells how a derived condition is made).
        fields: role -> PIL image (target, condition, mask) or str (prompt, captions), one value per role.
        key: Sample id for reports.
        resolution: Side R of the square crop.
        generator: Randomness of the SR degradation.
        sr_scale: Downscale factor of the SR degradation.
        degradation: Ranges of the SR degradation.
    """
    target_image = fields["target"]
    target_01 = to_tensor(fit_square(target_image, resolution))
    example = {"task": task.name, "target": _to_signed(target_01)}
    mask = None
    if "mask" in fields:
        # Stretch to the target's size first so that both get the same resize and crop.
        mask_image = fit_square(match_size(fields["mask"], target_image.size, Image.BILINEAR), resolution,
                                Image.BILINEAR)
        mask = (to_tensor(mask_image) > 0.5).float()  # (1, R, R); white = region to fill
    if task.image_inputs:
        if "condition" in fields:
            condition = fit_square(match_size(fields["condition"], target_image.size), resolution)
            example["condition"] = _to_signed(to_tensor(condition))
        elif schema.derived_condition is not None:  # e.g. `conditions.degraded`, `conditions.masked`
            example["condition"] = schema.derived_condition(
                target=example["target"], target_01=target_01, mask=mask, generator=generator, sr_scale=sr_scale,
                degradation=degradation)
        else:
            raise ValueError(f"schema {schema.name!r} gives no condition image for task {task.name!r}; "
                             f"supported: a 'condition' column, or a schema with a `derived_condition`.")
    if "mask" in task.image_inputs:
        example["mask"] = mask
    example["prompt"] = fields.get("prompt", "") if task.uses_prompt else ""
    for role in ("input_caption", "output_caption"):
        if role in fields:
            example[role] = fields[role]
    example["key"] = key
    return example


def collate_examples(examples: list) -> dict | None:
    """Stacks example dicts into a batch; None items (unreadable samples) are dropped.

    Returns:
        {"task": list[str], "target": (B, 3, R, R), "condition": (B, 3, R, R) with zeros where a task has no
        condition, "mask": (B, 1, R, R) with zeros where absent, "prompt": list[str], "key": list[str]}, plus
        "input_caption" / "output_caption" (list[str], "" where absent) when any example has them; None when every
        item was dropped.
    """
    kept = [example for example in examples if example is not None]
    if not kept:
        return None
    sizes = {tuple(example["target"].shape) for example in kept}
    if len(sizes) != 1:
        raise ValueError(f"cannot batch targets of different shapes {sorted(sizes)}; give every source the same "
                         f"`resolution`.")
    target = torch.stack([example["target"] for example in kept])  # (B, 3, R, R)
    zeros_image = torch.zeros_like(target[0])
    zeros_mask = torch.zeros_like(target[0, :1])
    batch = {
        "task": [example["task"] for example in kept],
        "target": target,
        "condition": torch.stack([example.get("condition", zeros_image) for example in kept]),
        "mask": torch.stack([example.get("mask", zeros_mask) for example in kept]),
        "prompt": [example["prompt"] for example in kept],
        "key": [example["key"] for example in kept],
    }
    for role in ("input_caption", "output_caption"):
        if any(role in example for example in kept):
            batch[role] = [example.get(role, "") for example in kept]
    return batch
