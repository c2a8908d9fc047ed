"""How a task's conditioning becomes UNet inputs (image channels, prompt tokens); shared by trainer and pipelines.

Conventions follow the diffusers pipelines a folded model must run in unchanged:
- "image" (edit, sr, inpaint): `vae.encode(image).latent_dist.mode()`, unscaled (StableDiffusionInstructPix2Pix).
- "mask" (inpaint_mask): the mask (1 = fill) resized to the latent size (StableDiffusionInpaintPipeline).
- "masked_image": latents of `image * (mask < 0.5)`, times the VAE scaling factor (StableDiffusionInpaintPipeline).
Images are (B, 3, H, W) in [-1, 1]; masks (B, 1, H, W) in [0, 1].
Prompts are tokenized to the text encoder's length (`tokenize_prompts`); a longer prompt is cut, with a warning that
says so (CLIP takes 77 tokens).
"""

from __future__ import annotations

import warnings

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


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the text encoder takes and its end was dropped."""


def truncated_tokens(tokenizer, prompts: list[str]) -> list[list[int]]:
    """The token ids of each prompt that do not fit in `tokenizer.model_max_length` (special tokens counted; the
    end-of-text token a cut prompt keeps is not among them); empty for a prompt that fits."""
    limit = tokenizer.model_max_length
    # verbose=False: the tokenizer's own "sequence length is longer than" notice would say it a second time
    encoded = tokenizer(list(prompts), truncation=False, verbose=False).input_ids
    return [ids[limit - 1:-1] if len(ids) > limit else [] for ids in encoded]


def warn_if_truncated(tokenizer, prompts: list[str], name: str = "prompt") -> None:
    """Warns (`PromptTruncatedWarning`) that prompts longer than the text encoder takes lose their end."""
    cut = [(index, ids) for index, ids in enumerate(truncated_tokens(tokenizer, prompts)) if ids]
    if not cut:
        return
    index, ids = cut[0]
    which = f"`{name}`" if len(prompts) == 1 else f"`{name}`[{index}]" + (
        f" (and {len(cut) - 1} more)" if len(cut) > 1 else "")
    dropped = tokenizer.decode(ids)
    warnings.warn(f"{which} is longer than the {tokenizer.model_max_length} tokens the text encoder takes: it was "
                  f"truncated, dropping its last {len(ids)} token{'s' if len(ids) > 1 else ''} (from "
                  f"{dropped[:40]!r}{'...' if len(dropped) > 40 else ''}).", PromptTruncatedWarning, stacklevel=3)


def tokenize_prompts(tokenizer, prompts: list[str], name: str = "prompt", warn: bool = True):
    """The tokenizer's output (`input_ids`, `attention_mask`: (B, model_max_length)) for `prompts`, padded and
    truncated as Stable Diffusion's pipelines do; a prompt that is cut gives a `PromptTruncatedWarning` (when
    `warn`) that says how many tokens were dropped."""
    if warn:
        warn_if_truncated(tokenizer, prompts, name)
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt")


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
