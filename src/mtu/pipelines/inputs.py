"""Images and masks a pipeline accepts: their size and count (read before any work) and their tensors.

Accepted as diffusers' `VaeImageProcessor` accepts them: PIL images, numpy arrays (H, W, C) or (B, H, W, C) in
[0, 1], torch tensors (C, H, W) or (B, C, H, W) in [-1, 1] (or [0, 1]), or lists of those. Masks are one channel,
1 where the model fills in: a PIL image in mode "L" or "1", numpy (H, W), (H, W, 1) or (B, H, W, 1), torch (H, W),
(1, H, W) or (B, 1, H, W), values in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor

from ..conditioning import upsample_for_sr  # noqa: F401  (re-exported for the pipelines)
from ..errors import InputError

MASK_MODES = ("L", "1")


@dataclass(frozen=True)
class ImageInfo:
    """How many images an argument holds and their size."""

    count: int
    height: int
    width: int


def _fail(name: str, message: str, value) -> InputError:
    return InputError(f"`{name}` {message}, got {_show(value)}.")


def _show(value) -> str:
    if isinstance(value, PIL.Image.Image):
        return f"a PIL image of mode {value.mode!r} and size {value.size}"
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"a {type(value).__name__} of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:200]


def _range(name: str, value, low: float, high: float) -> None:
    values = torch.as_tensor(value).float()
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        raise InputError(f"`{name}` values must be finite, got {int((~finite).sum())} NaN or inf value(s) in a "
                         f"{type(value).__name__} of shape {tuple(values.shape)}.")
    if values.numel() and (values.min() < low or values.max() > high):
        raise InputError(f"`{name}` values must lie in [{low:g}, {high:g}] for a {type(value).__name__}, got "
                         f"values in [{values.min().item():.3g}, {values.max().item():.3g}].")


def _describe_one(value, name: str, is_mask: bool) -> ImageInfo:
    """(count, height, width) of one PIL image, array or tensor; raises on a wrong layout or channel count."""
    if isinstance(value, PIL.Image.Image):
        if is_mask and value.mode not in MASK_MODES:
            raise _fail(name, f"must be a 1-channel PIL image (mode {' or '.join(map(repr, MASK_MODES))})", value)
        if not is_mask and value.mode != "RGB":
            raise _fail(name, "must be an RGB PIL image (use `.convert('RGB')`)", value)
        return ImageInfo(1, value.height, value.width)
    if isinstance(value, np.ndarray):
        # numpy is channels-last: (H, W[, C]) or (B, H, W, C)
        layouts = {2: (None, None), 3: (None, 2), 4: (0, 3)} if is_mask else {3: (None, 2), 4: (0, 3)}
        low, high = 0.0, 1.0
    elif isinstance(value, torch.Tensor):
        # torch is channels-first: ([C,] H, W) or (B, C, H, W)
        layouts = {2: (None, None), 3: (None, 0), 4: (0, 1)} if is_mask else {3: (None, 0), 4: (0, 1)}
        low, high = (0.0, 1.0) if is_mask else (-1.0, 1.0)
    else:
        raise _fail(name, "must be a PIL image, a numpy array, a torch tensor or a list of them", value)
    if value.ndim not in layouts:
        raise _fail(name, f"as a {type(value).__name__} must have {' or '.join(map(str, layouts))} dimensions",
                    value)
    batch_axis, channel_axis = layouts[value.ndim]
    channels = value.shape[channel_axis] if channel_axis is not None else 1
    expected = 1 if is_mask else 3
    if channels != expected:
        raise _fail(name, f"must have {expected} channel{'s' if expected > 1 else ''}, found {channels}", value)
    _range(name, value, low, high)
    spatial = [size for axis, size in enumerate(value.shape) if axis not in (batch_axis, channel_axis)]
    count = value.shape[batch_axis] if batch_axis is not None else 1
    return ImageInfo(count, *spatial)


def describe_images(value, name: str, is_mask: bool = False) -> ImageInfo:
    """Count and size of an image argument (a single item or a list); every item must have the same size."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise _fail(name, "must hold at least one image", value)
    infos = [_describe_one(item, name, is_mask) for item in items]
    kinds = sorted({type(item).__name__ for item in items})
    if len(kinds) > 1:
        raise InputError(f"`{name}` list items must all be of one kind, got {kinds}.")
    sizes = sorted({(info.height, info.width) for info in infos})
    if len(sizes) > 1:
        raise InputError(f"`{name}` images must all have the same size, got (height, width) sizes {sizes}.")
    return ImageInfo(sum(info.count for info in infos), *sizes[0])


def image_to_tensor(image, vae_scale_factor: int) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1], through diffusers' `VaeImageProcessor` as diffusers' pipelines do."""
    if isinstance(image, tuple):
        image = list(image)
    return VaeImageProcessor(vae_scale_factor=vae_scale_factor).preprocess(image)


def _mask_item(value) -> torch.Tensor:
    if isinstance(value, PIL.Image.Image):
        return torch.from_numpy(np.asarray(value.convert("L"), dtype=np.float32) / 255.0)[None, None]
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        # (H, W) | (H, W, 1) | (B, H, W, 1) -> (B, 1, H, W)
        return value[None, None] if value.ndim == 2 else value.movedim(-1, -3).reshape(-1, 1, *value.shape[-3:-1])
    return value.float().reshape(-1, 1, *value.shape[-2:])


def mask_to_tensor(mask) -> torch.Tensor:
    """(B, 1, H, W) of 0.0/1.0, 1 = fill; binarised at 0.5 as diffusers' inpainting mask processor does."""
    items = mask if isinstance(mask, (list, tuple)) else [mask]
    return (torch.cat([_mask_item(item) for item in items]) >= 0.5).float()


def expand_batch(tensor: torch.Tensor, batch_size: int, num_images_per_prompt: int) -> torch.Tensor:
    """(1 or batch_size, ...) -> (batch_size * num_images_per_prompt, ...), samples of one prompt adjacent."""
    if tensor.shape[0] == 1 and batch_size > 1:
        tensor = tensor.expand(batch_size, *tensor.shape[1:])
    assert tensor.shape[0] == batch_size, (tensor.shape, batch_size)
    return tensor.repeat_interleave(num_images_per_prompt, dim=0)
