"""Uploaded files -> images the model takes, and model images -> images a person can see.

An upload is read from the path the web framework stored it under (inside the app's own temporary folder), checked
for size before it is decoded, and decoded as `mtu generate` decodes `--image` (`mtu.data.imaging.open_image`: EXIF
rotation applied, 16-bit grey scaled, palettes and alpha converted, decompression bombs refused). Its file name is
never used: errors say "your upload", never a path. It is then centre-cropped and resized to the model's size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from PIL import Image

from ..errors import InputError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096
DISPLAY_SIZE = 192  # toy-world images (32 px) are scaled up (nearest) to at least this for the page


@dataclass(frozen=True)
class Upload:
    """A decoded upload: the image (RGB or L, upright) and what it was, for the reply."""

    image: Image.Image
    width: int
    height: int
    mode: str


def read_upload(path, mode: str = "RGB") -> Upload:
    """The image of an uploaded file; `InputError` in words for the chat when it is not a usable image.

    Args:
        path: Where the web framework stored the upload (its name is never shown or used).
        mode: "RGB" for images, "L" for masks.
    """
    from ..data.failures import SampleError
    from ..data.imaging import open_image

    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise InputError(f"your upload is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB.")
    if size == 0:
        raise InputError("your upload is an empty file.")
    with open(path, "rb") as handle:
        data = handle.read()
    original = _peek(data)
    pixels = original[0] * original[1]
    if pixels > MAX_UPLOAD_PIXELS:
        raise InputError(f"your image is {original[0]}x{original[1]} pixels; the limit is "
                         f"{MAX_UPLOAD_PIXELS:,} pixels (4096x4096).")
    try:
        image = open_image(data, mode=mode)
    except SampleError as error:  # names "image bytes (N bytes)", never the user's file name
        raise InputError(f"your upload could not be used: {error.message}") from None
    return Upload(image, image.width, image.height, original[2])  # the size upright (EXIF rotation applied)


def _peek(data: bytes) -> tuple[int, int, str]:
    """(width, height, mode) from the file's header, before decoding its pixels."""
    import io

    try:
        with Image.open(io.BytesIO(data)) as opened:
            return opened.width, opened.height, opened.mode
    except Image.DecompressionBombError:
        raise InputError("your image is refused: too many pixels (a possible decompression bomb).") from None
    except (OSError, SyntaxError, ValueError):
        raise InputError("your upload is not an image this app reads (PNG, JPEG, WebP, GIF, BMP or TIFF).") from None


def fit(image: Image.Image, size: int) -> Image.Image:
    """`image` centre-cropped to a square and resized to `size` (`mtu.data.imaging.fit_square`, antialiased)."""
    from ..data.imaging import fit_square

    return fit_square(image, size)


def for_display(image: Image.Image) -> Image.Image:
    """`image` scaled up by a whole factor (nearest, so pixels stay sharp) to at least `DISPLAY_SIZE` on its short
    side; images that large already are returned as they are."""
    factor = max(1, -(-DISPLAY_SIZE // min(image.size)))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def describe(upload: Upload, size: int) -> str:
    """What was done to an upload, for the reply: "640x480 RGBA -> 32x32 RGB (centre crop; alpha dropped)"."""
    notes = []
    if upload.width != upload.height:
        notes.append("centre crop")
    if "A" in upload.mode or upload.mode == "PA":
        notes.append("transparency dropped")
    if upload.mode.startswith("I") or upload.mode == "F":
        notes.append("16-bit scaled to 8-bit")
    extra = f" ({', '.join(notes)})" if notes else ""
    return f"{upload.width}x{upload.height} {upload.mode} -> {size}x{size} {upload.image.mode}{extra}"
