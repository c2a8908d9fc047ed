"""Validation images during training: each task's first sample, generated with `MTUPipeline`, saved as a strip
(condition | generated | target) under `output_dir/validation/step-NNNNNNN/TASK.png`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import EulerAncestralDiscreteScheduler
from PIL import Image

from ..upcycling.tasks import get_task
from .components import FrozenParts

VALIDATION_STEPS = 20


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def validation_examples(datasets) -> dict[str, dict]:
    """The first readable example of each task's first source (fixed for the whole run)."""
    examples = {}
    for dataset in datasets:
        task = dataset.config.task
        for index in range(min(len(dataset), 16)):
            if task in examples:
                break
            example = dataset.get(index, 0)
            if example is not None:
                examples[task] = {**example, "sr_scale": dataset.config.sr_scale}
    return examples


def _pipeline(parts: FrozenParts, model):
    scheduler = EulerAncestralDiscreteScheduler.from_config(parts.noise_scheduler.config)
    if parts.is_sdxl:
        from ..pipelines import MTUStableDiffusionXLPipeline

        return MTUStableDiffusionXLPipeline(parts.vae, parts.text_encoder, parts.text_encoder_2, parts.tokenizer,
                                            parts.tokenizer_2, model, scheduler)
    from ..pipelines import MTUPipeline

    return MTUPipeline(parts.vae, parts.text_encoder, parts.tokenizer, model, scheduler)


@torch.no_grad()
def write_validation_images(parts: FrozenParts, model, examples: dict[str, dict], folder: Path, seed: int,
                            write: bool = True) -> list[Path]:
    """Generates every task's validation sample and writes one PNG strip per task (none when `write` is False:
    a rank that only takes part in the forward passes, as every FSDP rank must)."""
    pipe = _pipeline(parts, model)
    pipe.set_progress_bar_config(disable=True)
    if write:
        folder.mkdir(parents=True, exist_ok=True)
    written = []
    was_training = model.training
    model.eval()
    try:
        for task, example in examples.items():
            spec = get_task(task)
            kwargs = {"prompt": example["prompt"]} if spec.uses_prompt else {}
            size = example["target"].shape[-1]
            extra = {"height": size, "width": size}
            if spec.image_inputs:
                kwargs["image"] = example["condition"][None]
            if pipe.task_defaults(task).sr_scale:  # super-resolution: the pipeline takes the low-resolution image
                # and upsamples it by sr_scale itself
                kwargs["image"] = F.interpolate(kwargs["image"], scale_factor=1 / example["sr_scale"], mode="area")
                extra = {}
            if "mask" in spec.image_inputs:  # the pipeline masks the full image itself
                kwargs["image"], kwargs["mask_image"] = example["target"][None], example["mask"][None]
            generator = torch.Generator().manual_seed(seed)
            image = pipe(task=task, num_inference_steps=VALIDATION_STEPS, generator=generator, output_type="pt",
                         **kwargs, **extra).images[0]
            panels = [_to_uint8(example["condition"])] if "condition" in example else []
            panels += [_to_uint8(image * 2 - 1), _to_uint8(example["target"])]
            path = folder / f"{task}.png"
            if write:
                Image.fromarray(np.concatenate(panels, axis=1)).save(path)
                written.append(path)
    finally:
        model.train(was_training)
    return written
