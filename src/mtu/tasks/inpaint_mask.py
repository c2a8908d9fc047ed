"""Classic mask inpainting ("inpaint_mask", the SD-inpainting input layout): an image, a mask and a prompt -> the
image with the masked region filled. Trained in the toy world on removals; not scored there."""

from __future__ import annotations

from ..toyworld.tasks import inpaint_pair, sample_removal
from ..upcycling.tasks import TaskSpec
from .base import Intents, Task, register
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
    intents=Intents(("inpaint", "mask", "masked", "masked area", "masked region", "the hole", "fill in",
                     "fill the masked area with", "fill the masked region with", "fill in the mask with",
                     "inpaint the masked region with", "inpaint the masked area with", "fill the hole with",
                     "the white area of the mask with"),
                    verb="drop", priority=4),
    colour="#8c564b",
))
