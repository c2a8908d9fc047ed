"""How a task's conditioning becomes UNet input channels; shared by the trainer and the pipelines.

Conventions follow the diffusers pipelines a folded model must run in unchanged:
- "image" (edit, sr, inpaint): `vae.encode(image).latent_dist.mode()`, unscaled (StableDiffusionInstructPix2Pix).
- "mask" (inpaint_mask): the mask (1 = fill) resized to the latent size (StableDiffusionInpaintPipeline).
- "masked_image": latents of `image * (mask < 0.5)`, times the VAE scaling factor (StableDiffusionInpaintPipeline).
Images are (B, 3, H, W) in [-1, 1]; masks (B, 1, H, W) in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .upcycling.tasks import TaskSpec


def upsample_for_sr(image: torch.Tensor, size: tuple[int, int], low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """The SR condition: the low-resolution image (B, 3, h, w) resized bicubically to `size` (the output size), so
    that it is VAE-encoded at the target's size; clamped to the image's value range [low, high]. Used by the
    training data (images in [0, 1]) and the pipelines (in [-1, 1]): bicubic resizing commutes with the affine map
    between the two ranges, so both give the same condition."""
    upsampled = F.interpolate(image.float(), size=tuple(size), mode="bicubic", align_corners=False)
    return upsampled.clamp(low, high).to(image.dtype)


def scaling_factor(vae) -> float:
    return getattr(vae.config, "scaling_factor", 0.18215)


def encode_target(vae, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents of the image to generate, as diffusers' training scripts make them (sampled, scaled)."""
    return vae.encode(pixels).latent_dist.sample(generator) * scaling_factor(vae)


def condition_channels(vae, spec: TaskSpec, image: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                       latent_size: tuple[int, int] | None = None) -> torch.Tensor | None:
    """(B, extra channels, h, w) for `spec`'s conditioning inputs, in order; None for a task without any.

    Args:
        vae: The (frozen) `AutoencoderKL`.
        spec: The task.
        image: Conditioning image (edit/sr/inpaint input, or the image to inpaint for inpaint_mask).
        mask: Inpainting mask, 1 where the model fills in.
        latent_size: (h, w) of the latents; default the image's size over the VAE's downsampling.
    """
    if not spec.image_inputs:
        return None
    if image is None:
        raise ValueError(f"task {spec.name!r} needs `image`, got None.")
    if ("mask" in spec.image_inputs or "masked_image" in spec.image_inputs) and mask is None:
        raise ValueError(f"task {spec.name!r} needs `mask_image`, got None.")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    size = tuple(latent_size or (image.shape[-2] // factor, image.shape[-1] // factor))
    parts = []
    for item in spec.image_inputs:
        if item == "image":
            parts.append(vae.encode(image).latent_dist.mode())
        elif item == "masked_image":
            masked = image * (mask < 0.5).to(image.dtype)
            parts.append(vae.encode(masked).latent_dist.mode() * scaling_factor(vae))
        elif item == "mask":
            parts.append(F.interpolate(mask.to(image.dtype), size=size))
        else:
            raise ValueError(f"unsupported conditioning input {item!r}; supported: image, masked_image, mask.")
    return torch.cat(parts, dim=1)
