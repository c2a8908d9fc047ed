"""Decoding images from whatever a source stores, and the shared resize + center-crop geometry."""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image


def open_image(value, base_dir: str | None = None, mode: str = "RGB") -> Image.Image:
    """Decodes one image cell fully, so a corrupt file fails here rather than later in a worker.

    Args:
        value: A file path (relative paths are joined to `base_dir`), raw bytes, a PIL image, or a
            `datasets.Image` cell `{"bytes": ..., "path": ...}`.
        base_dir: Folder that relative paths are relative to.
        mode: PIL mode of the result ("RGB" for images, "L" for masks).
    """
    if isinstance(value, dict):  # a `datasets.Image` cell read without decoding
        if value.get("bytes") is not None:
            return open_image(value["bytes"], base_dir, mode)
        if value.get("path"):
            return open_image(value["path"], base_dir, mode)
        raise ValueError(f"image cell has neither bytes nor path: {sorted(value)}")
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        image = Image.open(io.BytesIO(bytes(value)))
    elif isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if base_dir is not None and not os.path.isabs(path):
            path = os.path.join(base_dir, path)
        with Image.open(path) as opened:
            opened.load()
            return opened.convert(mode)
    else:
        raise TypeError(f"cannot read an image from a {type(value).__name__}")
    image.load()  # decode now: PIL is lazy and would fail only at the first pixel access
    return image.convert(mode)


def fit_square(image: Image.Image, resolution: int, resample=Image.BICUBIC) -> Image.Image:
    """Resizes the shorter side to `resolution` and center-crops to `resolution` x `resolution`.

    PIL's resize widens its filter when shrinking, so downscaling is antialiased.
    """
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != image.size:
        image = image.resize(size, resample=resample, reducing_gap=3.0)
    left = (size[0] - resolution) // 2
    top = (size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def match_size(image: Image.Image, size: tuple[int, int], resample=Image.BICUBIC) -> Image.Image:
    """Stretches `image` to `size` (width, height) so that it shares the target's crop geometry."""
    return image if image.size == size else image.resize(size, resample=resample)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor (C, H, W) in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (H, W, C) -> (C, H, W)
