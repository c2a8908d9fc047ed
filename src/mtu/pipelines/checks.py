"""`check_call_inputs`: every argument of an MTU pipeline call validated before any model runs.

Shared by `MTUPipeline`, `MTUStableDiffusionXLPipeline` and `generate` (which runs it before loading weights).
Messages name the argument in backticks and show the value received. Every rejection is an `mtu.InputError` (a
ValueError), a bad type too, as in diffusers' `check_inputs`. Numbers must be finite: a NaN guidance scale would
switch guidance off silently (NaN > 1 is False) and an infinite one gives a black image.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..tasks.base import task_plugin
from ..upcycling.tasks import TaskSpec, available_tasks
from .defaults import Family, Guidance, TaskDefaults, task_defaults, uses_mask, with_overrides
from .inputs import ImageInfo, describe_images

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class ImageResizedWarning(UserWarning):
    """An input image whose size is not a multiple of 8 was resized (rounded down), as diffusers does."""


SIZE_MULTIPLE = 8  # as diffusers' Stable Diffusion pipelines require of height and width


@dataclass(frozen=True)
class CallPlan:
    """A checked call with the task's defaults filled in.

    Args:
        spec: The task.
        defaults: The task's `TaskDefaults`.
        guidance: The guidance that runs: the task's kind, or "none" when the scales switch it off (text
            guidance needs `guidance_scale > 1`; dual guidance also `image_guidance_scale >= 1`, as in diffusers).
        prompts: One prompt per sample, before `num_images_per_prompt` (the empty prompt for tasks without one).
        negative_prompts: One per sample, or None for the default (the empty prompt; zeros for SDXL).
        image_size: (height, width) the task's image and mask are resized to before encoding: their size rounded
            down to a multiple of 8 (the low-resolution size for sr); None for a task without an image.
    """

    spec: TaskSpec
    defaults: TaskDefaults
    guidance: Guidance
    num_inference_steps: int
    guidance_scale: float
    image_guidance_scale: float | None
    prompts: list[str]
    negative_prompts: list[str] | None
    num_images_per_prompt: int
    height: int
    width: int
    image_size: tuple[int, int] | None = None

    @property
    def batch_size(self) -> int:
        return len(self.prompts)

    @property
    def num_samples(self) -> int:
        return len(self.prompts) * self.num_images_per_prompt


def _bad(name: str, message: str, value) -> InputError:
    return InputError(f"`{name}` {message}, got {value!r}."[:500])


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_task(task, task_specs: Sequence[TaskSpec]) -> TaskSpec:
    specs = {spec.name: spec for spec in task_specs}
    if not isinstance(task, str) or task not in specs:
        raise _bad("task", f"must be one of this model's tasks {list(specs)}", task)
    return specs[task]


def _check_numbers(defaults: TaskDefaults, name: str, steps, guidance_scale, image_guidance_scale,
                   num_images_per_prompt) -> None:
    if steps is not None and (not _is_int(steps) or steps < 1):
        raise _bad("num_inference_steps", "must be an integer >= 1", steps)
    if not _is_int(num_images_per_prompt) or num_images_per_prompt < 1:
        raise _bad("num_images_per_prompt", "must be an integer >= 1", num_images_per_prompt)
    for arg, value in (("guidance_scale", guidance_scale), ("image_guidance_scale", image_guidance_scale)):
        if value is None:
            continue
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or value < 0:
            raise _bad(arg, "must be a number >= 0", value)
        if not math.isfinite(value):
            raise _bad(arg, "must be finite (NaN would switch guidance off, inf gives a black image)", value)
    if defaults.guidance == "none" and guidance_scale is not None:
        raise _bad("guidance_scale", f"must be None: task {name!r} runs without guidance (Appendix A.2)",
                   guidance_scale)
    if defaults.guidance != "dual" and image_guidance_scale is not None:
        raise _bad("image_guidance_scale", f"must be None: task {name!r} has no image guidance",
                   image_guidance_scale)


def _prompt_optional(spec: TaskSpec) -> bool:
    return spec.name in available_tasks() and task_plugin(spec.name).prompt_optional


def _check_prompts(spec: TaskSpec, defaults: TaskDefaults, prompt, negative_prompt) -> tuple[list, list | None]:
    """(prompts, negative prompts) as lists; a task without a prompt gets [""]."""
    def as_list(name, value):
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)) and value and all(isinstance(item, str) for item in value):
            return list(value)
        raise _bad(name, "must be a string or a non-empty list of strings", value)

    if not spec.uses_prompt:
        if prompt is not None and any(as_list("prompt", prompt)):
            raise _bad("prompt", f"must be None: task {spec.name!r} is trained with the empty prompt", prompt)
        prompts = [""] * (len(prompt) if isinstance(prompt, (list, tuple)) else 1)
    elif prompt is None and _prompt_optional(spec):
        prompts = [""]  # the task's plug-in allows a call without a prompt: the empty prompt
    elif prompt is None:
        raise _bad("prompt", f"is required by task {spec.name!r}", prompt)
    else:
        prompts = as_list("prompt", prompt)
    if negative_prompt is not None and defaults.guidance == "none":
        raise _bad("negative_prompt", f"must be None: task {spec.name!r} runs without guidance", negative_prompt)
    return prompts, None if negative_prompt is None else as_list("negative_prompt", negative_prompt)


def _check_images(spec: TaskSpec, image, mask_image) -> tuple[ImageInfo | None, ImageInfo | None]:
    if not spec.image_inputs and image is not None:
        raise _bad("image", f"must be None: task {spec.name!r} takes no image", type(image).__name__)
    if spec.image_inputs and image is None:
        raise _bad("image", f"is required by task {spec.name!r} (inputs {list(spec.image_inputs)})", image)
    if not uses_mask(spec) and mask_image is not None:
        raise _bad("mask_image", f"must be None: task {spec.name!r} takes no mask", type(mask_image).__name__)
    if uses_mask(spec) and mask_image is None:
        raise _bad("mask_image", f"is required by task {spec.name!r}", mask_image)
    image_info = describe_images(image, "image") if image is not None else None
    mask_info = describe_images(mask_image, "mask_image", is_mask=True) if mask_image is not None else None
    if mask_info is not None:
        if (mask_info.height, mask_info.width) != (image_info.height, image_info.width):
            raise InputError(f"`mask_image` must have the size of `image` ({image_info.height}x{image_info.width}), "
                             f"got {mask_info.height}x{mask_info.width}.")
        if mask_info.count not in (1, image_info.count):
            raise InputError(f"`mask_image` must hold 1 mask or one per image ({image_info.count}), got "
                             f"{mask_info.count}.")
    return image_info, mask_info


def _image_size(image_info: ImageInfo | None, has_mask: bool) -> tuple[int, int] | None:
    """The (height, width) the image (and mask) is resized to: its size rounded down to a multiple of 8, as
    diffusers' `VaeImageProcessor` rounds it, with a warning when that changes it."""
    if image_info is None:
        return None
    size = (image_info.height, image_info.width)
    rounded = tuple(side - side % SIZE_MULTIPLE for side in size)
    if min(rounded) == 0:
        raise InputError(f"`image` must be at least {SIZE_MULTIPLE}x{SIZE_MULTIPLE} pixels, got {size[0]}x{size[1]}.")
    if rounded != size:
        also = " (and `mask_image`)" if has_mask else ""
        warnings.warn(f"`image`{also} is {size[0]}x{size[1]} (height x width), not a multiple of {SIZE_MULTIPLE}: "
                      f"it is resized to {rounded[0]}x{rounded[1]}, as diffusers' VaeImageProcessor rounds sizes "
                      f"down.", ImageResizedWarning)  # reported where it is raised: once, however often checked
    return rounded


def _batch_size(spec: TaskSpec, prompts: list, negative: list | None, image_info: ImageInfo | None) -> int:
    images = image_info.count if image_info is not None else 1
    if spec.uses_prompt and len(prompts) > 1 and images > 1 and len(prompts) != images:
        raise InputError(f"`prompt` has {len(prompts)} entries but `image` holds {images} images; give one "
                         f"prompt per image, one prompt, or one image.")
    batch = max(len(prompts), images)
    if not spec.uses_prompt and len(prompts) not in (1, batch):
        raise InputError(f"`prompt` has {len(prompts)} entries but `image` holds {images} images.")
    if negative is not None and len(negative) not in (1, batch):
        raise InputError(f"`negative_prompt` has {len(negative)} entries for a batch of {batch} prompts; give "
                         f"one or {batch}.")
    return batch


def _output_size(spec, defaults, image_size, height, width, default_size) -> tuple[int, int]:
    for name, value in (("height", height), ("width", width)):
        if value is not None and (not _is_int(value) or value <= 0 or value % SIZE_MULTIPLE):
            raise _bad(name, f"must be a positive multiple of {SIZE_MULTIPLE}", value)
    if image_size is None:
        base = default_size
    elif defaults.sr_scale is not None:  # SR: the output is sr_scale times the low-resolution input
        base = (image_size[0] * defaults.sr_scale, image_size[1] * defaults.sr_scale)
    else:
        base = image_size
        for name, value, size in (("height", height, base[0]), ("width", width, base[1])):
            if value is not None and value != size:
                raise _bad(name, f"must be None or the size of `image` ({size}) for task {spec.name!r}", value)
    return (height or base[0], width or base[1])


def _active_guidance(kind: Guidance, guidance_scale: float, image_guidance_scale: float | None) -> Guidance:
    if kind == "text" and guidance_scale > 1.0:
        return "text"
    if kind == "dual" and guidance_scale > 1.0 and image_guidance_scale >= 1.0:
        return "dual"
    return "none"


def check_call_inputs(task_specs: Sequence[TaskSpec], family: Family, task, *, prompt=None, image=None,
                      mask_image=None, height=None, width=None, num_inference_steps=None, guidance_scale=None,
                      image_guidance_scale=None, negative_prompt=None, num_images_per_prompt=1, generator=None,
                      output_type="pil", default_size: tuple[int, int] = (512, 512),
                      sampling_overrides: Mapping[str, Mapping[str, float]] | None = None) -> CallPlan:
    """Raises `InputError` for any invalid argument; returns the call with the task's defaults filled in.

    Args:
        task_specs: The model's tasks.
        family: "sd" or "sdxl" (picks the defaults table).
        default_size: (height, width) when neither the call nor an image gives one.
        sampling_overrides: {task: {field: scale}} replacing the table's scales (an adapter's `sampling.json`,
            checked by `defaults.check_sampling`).
        Other arguments: as `MTUPipeline.__call__`.
    """
    spec = _check_task(task, task_specs)
    defaults = with_overrides(task_defaults(family, spec), (sampling_overrides or {}).get(spec.name))
    _check_numbers(defaults, spec.name, num_inference_steps, guidance_scale, image_guidance_scale,
                   num_images_per_prompt)
    prompts, negative = _check_prompts(spec, defaults, prompt, negative_prompt)
    image_info, mask_info = _check_images(spec, image, mask_image)
    batch = _batch_size(spec, prompts, negative, image_info)
    image_size = _image_size(image_info, mask_info is not None)
    height, width = _output_size(spec, defaults, image_size, height, width, default_size)
    num_samples = batch * num_images_per_prompt
    if isinstance(generator, (list, tuple)):
        if len(generator) != num_samples or not all(isinstance(g, torch.Generator) for g in generator):
            raise InputError(f"`generator` as a list must hold one torch.Generator per image ({batch} prompts x "
                             f"{num_images_per_prompt} = {num_samples}), got {len(generator)} items.")
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise _bad("generator", "must be None, a torch.Generator or a list of them", generator)
    if output_type not in OUTPUT_TYPES:
        raise _bad("output_type", f"must be one of {OUTPUT_TYPES}", output_type)
    guidance_scale = defaults.guidance_scale if guidance_scale is None else float(guidance_scale)
    if image_guidance_scale is None:
        image_guidance_scale = defaults.image_guidance_scale
    return CallPlan(
        spec=spec, defaults=defaults,
        guidance=_active_guidance(defaults.guidance, guidance_scale, image_guidance_scale),
        num_inference_steps=num_inference_steps or defaults.num_inference_steps, guidance_scale=guidance_scale,
        image_guidance_scale=None if image_guidance_scale is None else float(image_guidance_scale),
        prompts=prompts * (batch // len(prompts)), negative_prompts=None if negative is None else
        negative * (batch // len(negative)), num_images_per_prompt=num_images_per_prompt, height=height,
        width=width, image_size=image_size)


def check_latents(latents, shape: tuple[int, ...]) -> None:
    """`latents` is None or a finite tensor of exactly `shape` (num_samples, latent channels, h, w)."""
    if latents is None:
        return
    if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != tuple(shape):
        found = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise InputError(f"`latents` must be a tensor of shape {tuple(shape)} for this call, got {found}.")
    if latents.is_floating_point() and not bool(torch.isfinite(latents).all()):
        bad = int((~torch.isfinite(latents)).sum())
        raise InputError(f"`latents` must be finite, got a tensor with {bad} NaN or inf value(s).")
