"""`TaskDefaults`: how a task is sampled when the caller leaves an argument unset (Appendix A.2). A leaf module, so
task plug-ins (`mtu.tasks`) and the pipelines (`mtu.pipelines.defaults`) both use it without importing each other."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from ..errors import InputError

Guidance = Literal["none", "text", "dual"]
GUIDANCE_KINDS = ("none", "text", "dual")


@dataclass(frozen=True)
class TaskDefaults:
    """How a task is sampled when the caller leaves an argument unset.

    Args:
        guidance: `"none"` (one UNet branch; the empty prompt, as SR is trained), `"text"` (classifier-free
            guidance on the prompt, as `StableDiffusionPipeline` / `StableDiffusionInpaintPipeline`) or `"dual"`
            (InstructPix2Pix text + image guidance, Brooks et al. 2023).
        num_inference_steps: Denoising steps.
        guidance_scale: Text guidance scale (1.0: no text guidance).
        image_guidance_scale: Image guidance scale of `"dual"` guidance; None for the other kinds.
        sr_scale: For super-resolution: output size over the size of `image`; None for other tasks.
    """

    guidance: Guidance
    num_inference_steps: int
    guidance_scale: float = 1.0
    image_guidance_scale: float | None = None
    sr_scale: int | None = None

    def __post_init__(self):
        if self.guidance not in GUIDANCE_KINDS:
            raise InputError(f"`guidance` must be one of {GUIDANCE_KINDS}, got {self.guidance!r}.")
        if (self.guidance == "dual") != (self.image_guidance_scale is not None):
            raise InputError(f"`image_guidance_scale` is set exactly for 'dual' guidance; got guidance "
                             f"{self.guidance!r} with image_guidance_scale {self.image_guidance_scale!r}.")

    def call_kwargs(self) -> dict:
        """The sampling arguments of a diffusers pipeline `__call__` (for a folded pipeline)."""
        kwargs = {k: v for k, v in asdict(self).items() if k in ("num_inference_steps", "guidance_scale")}
        if self.image_guidance_scale is not None:
            kwargs["image_guidance_scale"] = self.image_guidance_scale
        return kwargs
