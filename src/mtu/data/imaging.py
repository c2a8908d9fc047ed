"""Decoding images from whatever a source stores, and the shared resize + center-crop geometry.

`open_image` decodes as a viewer shows the file: the EXIF orientation is applied (as diffusers' `load_image`
does), 16-bit greyscale (PIL modes I;16 and I) is scaled to 8 bits rather than clipped to white, and an image larger
than PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) is refused, as is one whose values have no known
scale (32-bit float, mode F). Every failure is a `SampleError` naming the file: a corrupt sample is counted by the
trainer and listed by `mtu data validate`, and a `--image` the user named fails with one line.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .failures import SampleError

# What PIL's decoders raise on corrupt bytes (SyntaxError: "broken PNG file"; ValueError: bad tiles, oversized text
# chunks). Caught only around PIL's own calls on the user's bytes.
_DECODE_ERRORS = (SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_BOMBS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
_SIXTEEN_BIT_MAX = 65535


def _to_8bit(image: Image.Image, where: str) -> Image.Image:
    """16-bit greyscale (I;16*, or I within [0, 65535]) as 8-bit L: 65535 -> 255, mid-grey stays mid-grey."""
    if image.mode == "F":
        raise SampleError(f"{where}: a 32-bit float image (PIL mode F) has no known value range; save it as an "
                          f"8- or 16-bit PNG.")
    if image.mode == "I":
        low, high = image.getextrema()
        if low < 0 or high > _SIXTEEN_BIT_MAX:
            raise SampleError(f"{where}: a 32-bit integer image (PIL mode I) with values {low}..{high} has no known "
                              f"range; save it as an 8- or 16-bit PNG.")
    array = np.asarray(image).astype(np.float64)  # (H, W)
    return Image.fromarray(np.round(array * (255.0 / _SIXTEEN_BIT_MAX)).astype(np.uint8))


def _decoded(image: Image.Image, mode: str, where: str) -> Image.Image:
    """`image` fully decoded, upright (EXIF orientation applied) and in `mode`."""
    image.load()  # decode now: PIL is lazy and would fail only at the first pixel access
    image = ImageOps.exif_transpose(image)
    if image.mode == "F" or image.mode == "I" or image.mode.startswith("I;16"):
        image = _to_8bit(image, where)
    return image.convert(mode)


def _open(source, mode: str, where: str) -> Image.Image:
    """Opens a path or a file object with PIL and decodes it; every decoding failure becomes a `SampleError`."""
    try:
        with warnings.catch_warnings():
            # Above MAX_IMAGE_PIXELS PIL only warns (errors above twice that): refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                return _decoded(opened, mode, where)
    except SampleError:
        raise  # already names the file
    except _BOMBS as error:
        raise SampleError(f"{where}: refused, as a possible decompression bomb: {error}") from error
    except UnidentifiedImageError:
        raise SampleError(f"{where}: not an image in a format PIL reads") from None
    except OSError as error:
        if error.errno is not None:
            raise  # the file itself (missing, unreadable, a folder): the OSError names it
        raise SampleError(f"{where}: cannot decode the image ({type(error).__name__}: {error})") from error
    except _DECODE_ERRORS as error:
        raise SampleError(f"{where}: cannot decode the image ({type(error).__name__}: {error})") from error


def open_image(value, base_dir: str | None = None, mode: str = "RGB") -> Image.Image:
    """Decodes one image cell fully, so a corrupt file fails here rather than later in a worker.

    Args:
        value: A file path (relative paths are joined to `base_dir`), raw bytes, a PIL image, or a
            `datasets.Image` cell `{"bytes": ..., "path": ...}`.
        base_dir: Folder that relative paths are relative to.
        mode: PIL mode of the result ("RGB" for images, "L" for masks).

    Raises:
        SampleError: naming the file, for an image that cannot be decoded or is refused; FileNotFoundError for a
            missing file.
    """
    if isinstance(value, dict):  # a `datasets.Image` cell read without decoding
        if value.get("bytes") is not None:
            return open_image(value["bytes"], base_dir, mode)
        if value.get("path"):
            return open_image(value["path"], base_dir, mode)
        raise SampleError(f"image cell has neither bytes nor path: {sorted(value)}")
    if isinstance(value, Image.Image):
        return _decoded(value, mode, "image")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _open(io.BytesIO(bytes(value)), mode, f"image bytes ({len(value)} bytes)")
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if base_dir is not None and not os.path.isabs(path):
            path = os.path.join(base_dir, path)
        return _open(path, mode, path)
    raise SampleError(f"an image cell must be a path, bytes or an image, got a {type(value).__name__}: "
                      f"{str(value)[:80]!r}")


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
