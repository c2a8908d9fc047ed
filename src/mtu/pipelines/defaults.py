"""Per-task sampling defaults (Appendix A.2, each task's `Task.defaults`) and the guidance each task uses.

An adapter folder may hold `sampling.json`, {task: {"guidance_scale": x, "image_guidance_scale": y}}: the scales
it was measured with, which a pipeline loaded from that folder uses instead of the table's (`read_sampling`).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import replace
from difflib import get_close_matches
from pathlib import Path
from typing import Literal

from ..errors import InputError
from ..tasks.base import FAMILIES, task_plugin
from ..tasks.sampling import GUIDANCE_KINDS, Guidance, TaskDefaults
from ..upcycling.tasks import TaskSpec, available_tasks

Family = Literal["sd", "sdxl"]
__all__ = ["GUIDANCE_KINDS", "TASK_DEFAULTS", "Guidance", "TaskDefaults", "guidance_kind", "task_defaults"]


class _FamilyDefaults(Mapping):
    """{family: {task: TaskDefaults}} over the registered tasks (each `Task.defaults`), looked up when read. The
    built-in tasks' values are Appendix A.2's (in `mtu/tasks/*.py`)."""

    def __getitem__(self, family: str) -> dict[str, TaskDefaults]:
        if family not in FAMILIES:
            raise KeyError(family)
        plugins = [task_plugin(name) for name in available_tasks()]
        return {plugin.name: plugin.defaults[family] for plugin in plugins if family in plugin.defaults}

    def __iter__(self):
        return iter(FAMILIES)

    def __len__(self) -> int:
        return len(FAMILIES)


TASK_DEFAULTS = _FamilyDefaults()

# A task without defaults of its own for a family is sampled like the built-in task of its guidance kind.
_FALLBACK = {"none": "sr", "text": "t2i", "dual": "edit"}


def uses_mask(spec: TaskSpec) -> bool:
    """Whether the task reads `mask_image` (a mask channel or a masked image)."""
    return "mask" in spec.image_inputs or "masked_image" in spec.image_inputs


def guidance_kind(spec: TaskSpec) -> Guidance:
    """The guidance a task's inputs call for.

    No prompt: none. Image conditions with a mask: text guidance with the conditions in both branches (SD
    inpainting). Other image conditions: InstructPix2Pix dual guidance. Text only: text guidance.
    """
    if not spec.uses_prompt:
        return "none"
    if spec.image_inputs and not uses_mask(spec):
        return "dual"
    return "text"


def task_defaults(family: Family, spec: TaskSpec) -> TaskDefaults:
    """The defaults of `spec` for a model `family` ("sd" or "sdxl"); unknown tasks fall back by their kind."""
    if family not in TASK_DEFAULTS:
        raise InputError(f"`family` must be one of {sorted(TASK_DEFAULTS)}, got {family!r}.")
    kind = guidance_kind(spec)
    own = task_plugin(spec.name).defaults.get(family) if spec.name in available_tasks() else None
    if own is not None and own.guidance == kind:
        return own
    fallback = task_plugin(_FALLBACK[kind]).defaults[family]
    return TaskDefaults(kind, fallback.num_inference_steps, fallback.guidance_scale, fallback.image_guidance_scale)


SAMPLING_NAME = "sampling.json"  # an adapter folder's own guidance scales, beside its mtu_config.json
SAMPLING_FIELDS = ("guidance_scale", "image_guidance_scale")


def with_overrides(defaults: TaskDefaults, overrides: Mapping[str, float] | None) -> TaskDefaults:
    """`defaults` with the scales in `overrides` (checked by `check_sampling`) replacing the table's."""
    return replace(defaults, **overrides) if overrides else defaults


def _check_scales(source: str, family: Family, spec: TaskSpec, scales) -> dict[str, float]:
    if not isinstance(scales, Mapping):
        raise InputError(f"{source}: task {spec.name!r} must map to an object of {list(SAMPLING_FIELDS)}, got "
                         f"{scales!r}.")
    kind = task_defaults(family, spec).guidance
    checked = {}
    for field, value in scales.items():
        if field not in SAMPLING_FIELDS:
            nearest = get_close_matches(str(field), SAMPLING_FIELDS, n=1)
            hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
            raise InputError(f"{source}: task {spec.name!r} has unknown field {field!r} (known: "
                             f"{list(SAMPLING_FIELDS)}){hint}")
        if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value)
                or value < 0):
            raise InputError(f"{source}: task {spec.name!r} `{field}` must be a finite number >= 0, got {value!r}.")
        if kind == "none" or (field == "image_guidance_scale" and kind != "dual"):
            what = "runs without guidance" if kind == "none" else f"has {kind!r} guidance, no image guidance"
            raise InputError(f"{source}: task {spec.name!r} {what}, so it takes no `{field}`, got {value!r}.")
        checked[field] = float(value)
    return checked


def check_sampling(sampling, family: Family, specs: Sequence[TaskSpec], source: str) -> dict[str, dict[str, float]]:
    """A checked copy of per-task sampling overrides {task: {"guidance_scale", "image_guidance_scale"}}.

    Args:
        sampling: The overrides; every key a task of `specs`, every field optional but one the task's guidance
            uses (`guidance_scale` unless it runs without guidance, `image_guidance_scale` for dual guidance).
        family: "sd" or "sdxl" (whose defaults table says each task's guidance).
        specs: The model's tasks.
        source: How errors name where the overrides come from (a file path, an argument).
    """
    if not isinstance(sampling, Mapping):
        raise InputError(f"{source} must hold an object {{task: {{field: value}}}}, got {sampling!r}."[:500])
    by_name = {spec.name: spec for spec in specs}
    checked = {}
    for task, scales in sampling.items():
        if task not in by_name:
            raise InputError(f"{source}: task {task!r} is not one of the model's tasks {list(by_name)}.")
        checked[task] = _check_scales(source, family, by_name[task], scales)
    return checked


def read_sampling(folder, family: Family, specs: Sequence[TaskSpec]) -> dict[str, dict[str, float]]:
    """The checked `sampling.json` of an adapter folder, or {} when it has none."""
    path = Path(folder) / SAMPLING_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}).") from error
    return check_sampling(data, family, specs, str(path))
