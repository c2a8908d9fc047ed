"""Classic mask inpainting ("inpaint_mask", the SD-inpainting input layout): an image, a mask and a prompt -> the
image with the masked region filled. Trained in the toy world on removals; not scored there."""

from __future__ import annotations

from ..toyworld.tasks import inpaint_pair, sample_removal
from ..upcycling.tasks import TaskSpec
from .base import Task, register
from .sampling import TaskDefaults


def toy_pair(scene, size, rng) -> dict:
    fields = inpaint_pair(sample_removal(scene, rng), size)
    # Classic inpainting: the masked target is the input, the prompt describes the whole target.
    return {"target": fields["target"], "mask": fields["mask"], "prompt": fields["output_caption"]}


TASK = register(Task(
    TaskSpec("inpaint_mask", "classic mask inpainting (SD-inpainting input layout)",
             image_inputs=("mask", "masked_image")),
    schemas=("mask_inpaint",),
    toy_pair=toy_pair,
    # Not in the paper: diffusers' inpainting default (7.5).
    defaults={"sd": TaskDefaults("text", 20, guidance_scale=7.5), "sdxl": TaskDefaults("text", 50, guidance_scale=7.5)},
    colour="#8c564b",
))
