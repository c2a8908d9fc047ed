"""Images and masks a pipeline accepts: their size and count (read before any work) and their tensors.

Accepted as diffusers' `VaeImageProcessor` accepts them: PIL images of any mode (converted to RGB; 16-bit grey
scaled, not clipped), numpy arrays (H, W, C) or (B, H, W, C) in [0, 1], torch tensors (C, H, W) or (B, C, H, W) in
[-1, 1] (or [0, 1]), or lists of those (PIL images of any kinds, JPEG and PNG, mixed). Masks are one channel, 1
where the model fills in: a PIL image of any mode (converted to grey, as diffusers' mask processor does), numpy
(H, W), (H, W, 1) or (B, H, W, 1), torch (H, W), (1, H, W) or (B, 1, H, W), values in [0, 1]. Images and masks are
resized to the size the call plans (`CallPlan.image_size`) as `VaeImageProcessor.preprocess` resizes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor

from ..conditioning import upsample_for_sr  # noqa: F401  (re-exported for the pipelines)
from ..errors import InputError

# 16-bit grey (PNG, TIFF): PIL's own conversion clips these at 255, which turns a photo white; they are scaled.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


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


def convert_pil(image: PIL.Image.Image, mode: str, name: str) -> PIL.Image.Image:
    """`image` in `mode` ("RGB" for images, "L" for masks): alpha dropped, palettes and CMYK converted, as
    diffusers' `convert_to_rgb` / `convert_to_grayscale`; 16-bit grey scaled from [0, 65535] to [0, 255]."""
    if image.mode == mode:
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(image, dtype=np.float64) / 65535.0, 0.0, 1.0)
        image = PIL.Image.fromarray(np.round(grey * 255.0).astype(np.uint8), mode="L")
        return image.convert(mode)
    try:
        return image.convert(mode)
    except ValueError as error:  # PIL's refusal of a conversion it lacks (e.g. premultiplied "La")
        raise _fail(name, f"must be a PIL image that converts to {mode} ({error})", image) from error


def _kind(value) -> str:
    """The kind of an image list item: every PIL image (JPEG, PNG, ...) is one kind, "Image"."""
    return "Image" if isinstance(value, PIL.Image.Image) else type(value).__name__


def _describe_one(value, name: str, is_mask: bool) -> ImageInfo:
    """(count, height, width) of one PIL image, array or tensor; raises on a wrong layout or channel count."""
    if isinstance(value, PIL.Image.Image):
        convert_pil(value, "L" if is_mask else "RGB", name)  # raises for a mode PIL cannot convert
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
    kinds = sorted({_kind(item) for item in items})
    if len(kinds) > 1:
        raise InputError(f"`{name}` list items must all be of one kind, got {kinds}.")
    sizes = sorted({(info.height, info.width) for info in infos})
    if len(sizes) > 1:
        raise InputError(f"`{name}` images must all have the same size, got (height, width) sizes {sizes}.")
    return ImageInfo(sum(info.count for info in infos), *sizes[0])


def image_to_tensor(image, vae_scale_factor: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1], through diffusers' `VaeImageProcessor` as diffusers' pipelines do: PIL images
    converted to RGB first, everything resized to `size` (height, width) where given (PIL with Lanczos, arrays and
    tensors with nearest neighbours), else to the image's size rounded down to a multiple of `vae_scale_factor`."""
    is_list = isinstance(image, (list, tuple))
    items = list(image) if is_list else [image]
    if isinstance(items[0], PIL.Image.Image):
        items = [convert_pil(item, "RGB", "image") for item in items]
    height, width = size if size is not None else (None, None)
    processor = VaeImageProcessor(vae_scale_factor=vae_scale_factor)
    return processor.preprocess(items if is_list else items[0], height, width)


def _mask_item(value, size: tuple[int, int] | None) -> torch.Tensor:
    """(B, 1, H, W) float of one mask argument item, resized to `size` as diffusers' mask processor does."""
    if isinstance(value, PIL.Image.Image):
        value = convert_pil(value, "L", "mask_image")
        if size is not None and (value.height, value.width) != tuple(size):
            value = value.resize((size[1], size[0]), resample=PIL.Image.LANCZOS)
        return torch.from_numpy(np.asarray(value, dtype=np.float32) / 255.0)[None, None]
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        # (H, W) | (H, W, 1) | (B, H, W, 1) -> (B, 1, H, W)
        value = value[None, None] if value.ndim == 2 else value.movedim(-1, -3).reshape(-1, 1, *value.shape[-3:-1])
    else:
        value = value.float().reshape(-1, 1, *value.shape[-2:])
    if size is not None and tuple(value.shape[-2:]) != tuple(size):
        value = torch.nn.functional.interpolate(value, size=tuple(size))  # nearest, as VaeImageProcessor.resize
    return value


def mask_to_tensor(mask, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, 1, H, W) of 0.0/1.0, 1 = fill, resized to `size` (height, width) where given; binarised at 0.5 as
    diffusers' inpainting mask processor does."""
    items = mask if isinstance(mask, (list, tuple)) else [mask]
    return (torch.cat([_mask_item(item, size) for item in items]) >= 0.5).float()


def expand_batch(tensor: torch.Tensor, batch_size: int, num_images_per_prompt: int) -> torch.Tensor:
    """(1 or batch_size, ...) -> (batch_size * num_images_per_prompt, ...), samples of one prompt adjacent."""
    if tensor.shape[0] == 1 and batch_size > 1:
        tensor = tensor.expand(batch_size, *tensor.shape[1:])
    assert tensor.shape[0] == batch_size, (tensor.shape, batch_size)
    return tensor.repeat_interleave(num_images_per_prompt, dim=0)
