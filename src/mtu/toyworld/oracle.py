"""Reads an image of the toy world back into a `Scene`, and scores model outputs against exact ground truth.

Parsing: the background is the most common (palette-snapped) border colour; shapes are 4-connected components
of non-background pixels; a component's colour is the palette colour nearest its median, its kind comes from
two geometric ratios of its bounding box, its cell from its centroid and its size from its extent. Snapping to
the palette and dropping specks make the parse tolerant of mild noise and blur in generated images.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .scene import (BACKGROUND_COLOURS, COLOURS, POSITIONS, SHAPE_COLOURS, Scene, Shape, render_array,
                    shape_mask)

_NAMES = tuple(COLOURS)
_PALETTE = np.array([COLOURS[name] for name in _NAMES], dtype=np.float32)  # (colours, 3)
# Thresholds between the ratios of crisp renders (measured over every size 32-128, kind, size and cell):
# fill: square 1.0, circle 0.76-0.85, triangle 0.50-0.52; top share: triangle 0.20-0.24, others 0.5;
# extent / cell: small 0.34-0.47, large 0.73-0.87.
SQUARE_MIN_FILL = 0.93
TRIANGLE_MAX_TOP_SHARE = 0.37
LARGE_MIN_EXTENT = 0.6
MIN_COMPONENT_FRACTION = 4 / 1024  # specks smaller than 4 pixels of a 32x32 image are noise


def as_array(image) -> np.ndarray:
    """(H, W, 3) uint8 array of a square RGB PIL image or array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"`image` must be a square RGB PIL image or (H, W, 3) array, got "
                         f"{getattr(image, 'shape', type(image).__name__)}.")
    return image.astype(np.uint8) if image.dtype != np.uint8 else image


def snap_colours(array: np.ndarray, names: tuple[str, ...] = _NAMES) -> np.ndarray:
    """(H, W) index into `names` of the nearest palette colour of every pixel."""
    palette = np.array([COLOURS[name] for name in names], dtype=np.float32)
    distances = ((array[:, :, None, :].astype(np.float32) - palette) ** 2).sum(-1)  # (H, W, colours)
    return distances.argmin(-1)


def read_background(array: np.ndarray) -> str:
    """The background colour: the most common palette-snapped colour of the border pixels."""
    border = np.concatenate([array[0], array[-1], array[1:-1, 0], array[1:-1, -1]])[None]  # (1, 4H-4, 3)
    counts = np.bincount(snap_colours(border, BACKGROUND_COLOURS).ravel(), minlength=len(BACKGROUND_COLOURS))
    return BACKGROUND_COLOURS[int(counts.argmax())]


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean (H, W) mask, each as an (N, 2) array of (row, column).

    Every pixel takes the smallest label among itself and its neighbours until nothing changes; shapes here are
    small and convex, so that takes a few dozen vectorised passes (faster than a Python flood fill).
    """
    height, width = mask.shape
    unset = height * width
    labels = np.where(mask, np.arange(unset).reshape(height, width), unset)
    while True:
        padded = np.pad(labels, 1, constant_values=unset)
        neighbours = np.minimum.reduce([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
        updated = np.where(mask, np.minimum(labels, neighbours), unset)
        if np.array_equal(updated, labels):
            break
        labels = updated
    coordinates = np.argwhere(mask)  # (N, 2), row-major like labels[mask]
    flat = labels[mask]
    order = np.argsort(flat, kind="stable")
    boundaries = np.flatnonzero(np.diff(flat[order])) + 1
    return np.split(coordinates[order], boundaries) if len(flat) else []


def classify_component(pixels: np.ndarray, colours: np.ndarray, size: int) -> Shape:
    """The shape a component of (row, column) pixels shows; `colours` are the component's RGB values."""
    rows, columns = pixels[:, 0], pixels[:, 1]
    height, width = rows.max() - rows.min() + 1, columns.max() - columns.min() + 1
    fill = len(pixels) / (height * width)
    middle = (rows.min() + rows.max()) / 2
    off_middle = max(int((rows != middle).sum()), 1)
    top_share = (rows < middle).sum() / off_middle  # a triangle keeps most of its pixels in its lower half
    if fill >= SQUARE_MIN_FILL:
        kind = "square"
    elif top_share <= TRIANGLE_MAX_TOP_SHARE:
        kind = "triangle"
    else:
        kind = "circle"
    cell = size / 3
    grid_row = min(int((rows.mean() + 0.5) / cell), 2)  # +0.5: pixel centres
    grid_column = min(int((columns.mean() + 0.5) / cell), 2)
    colour_index = snap_colours(np.median(colours, axis=0)[None, None], SHAPE_COLOURS)[0, 0]
    return Shape(kind=kind, colour=SHAPE_COLOURS[int(colour_index)],
                 size="large" if max(height, width) / cell >= LARGE_MIN_EXTENT else "small",
                 position=POSITIONS[3 * grid_row + grid_column])


def parse_scene(image) -> Scene:
    """The scene an image shows. Raises ValueError when it shows no valid scene (e.g. two shapes in one cell,
    more than three shapes, or a shape of the background's colour)."""
    array = as_array(image)
    size = array.shape[0]
    background = read_background(array)
    foreground = snap_colours(array) != _NAMES.index(background)
    min_pixels = max(3, round(MIN_COMPONENT_FRACTION * size * size))
    shapes = [classify_component(pixels, array[pixels[:, 0], pixels[:, 1]], size)
              for pixels in connected_components(foreground) if len(pixels) >= min_pixels]
    return Scene(background, tuple(shapes))


def try_parse(image) -> Scene | None:
    """`parse_scene`, or None when the image shows no valid scene."""
    try:
        return parse_scene(image)
    except ValueError:
        return None


def _unsized(scene: Scene) -> tuple:
    return scene.background, tuple((shape.kind, shape.colour, shape.position) for shape in scene.shapes)


def scene_matches(image, scene: Scene, check_size: bool = True) -> bool:
    """True when `image` parses to exactly `scene` (background and every shape; sizes only if `check_size`)."""
    parsed = try_parse(image)
    if parsed is None:
        return False
    return parsed == scene if check_size else _unsized(parsed) == _unsized(scene)


def t2i_faithful(image, caption_scene: Scene, check_size: bool = True) -> bool:
    """Text-to-image: the generated image shows exactly the scene its caption was made from."""
    return scene_matches(image, caption_scene, check_size)


def edit_success(output, target_scene: Scene, check_size: bool = True) -> bool:
    """Editing: the edited image shows exactly the scene the instruction asks for."""
    return scene_matches(output, target_scene, check_size)


def psnr(output, reference) -> float:
    """Peak signal-to-noise ratio in dB of two same-size RGB images (inf when identical)."""
    first, second = as_array(output).astype(np.float64), as_array(reference).astype(np.float64)
    if first.shape != second.shape:
        raise ValueError(f"`output` and the reference must have the same shape, got {first.shape} and {second.shape}.")
    mse = ((first - second) ** 2).mean()
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def edit_fidelity(output, target_image) -> float:
    """Editing: PSNR (dB) of the output against the exact target image."""
    return psnr(output, target_image)


def inpaint_removed(output, removed_shape: Shape, min_background: float = 0.9) -> bool:
    """Object removal: at least `min_background` of the removed shape's pixels now show the background."""
    array = as_array(output)
    mask = shape_mask(removed_shape, array.shape[0])
    background = _NAMES.index(read_background(array))
    return float((snap_colours(array[mask][None]) == background).mean()) >= min_background


def inpaint_preserved(output, target_image, check_size: bool = True) -> bool:
    """Object removal: everything else is intact, i.e. the output parses to the same scene as the target."""
    target = try_parse(target_image)
    if target is None:
        raise ValueError("`target_image` does not show a valid toy-world scene.")
    return scene_matches(output, target, check_size)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    offsets = np.arange(size) - (size - 1) / 2
    window = np.exp(-offsets ** 2 / (2 * sigma ** 2))
    return window / window.sum()


def _filter(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of an (H, W, C) array along both spatial axes."""
    image = np.apply_along_axis(lambda line: np.convolve(line, window, mode="valid"), 0, image)
    return np.apply_along_axis(lambda line: np.convolve(line, window, mode="valid"), 1, image)


def sr_psnr(output, hr) -> float:
    """Super-resolution: PSNR (dB) of the output against the high-resolution image."""
    return psnr(output, hr)


def sr_ssim(output, hr) -> float:
    """Super-resolution: SSIM (Wang et al., 2004; 11x11 Gaussian window, sigma 1.5) averaged over RGB."""
    first, second = as_array(output).astype(np.float64), as_array(hr).astype(np.float64)
    if first.shape != second.shape:
        raise ValueError(f"`output` and `hr` must have the same shape, got {first.shape} and {second.shape}.")
    window = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mean_x, mean_y = _filter(first, window), _filter(second, window)
    var_x = _filter(first ** 2, window) - mean_x ** 2
    var_y = _filter(second ** 2, window) - mean_y ** 2
    covariance = _filter(first * second, window) - mean_x * mean_y
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def oracle_accuracy(scenes: list[Scene], size: int = 32) -> float:
    """Fraction of `scenes` whose crisp render parses back exactly (the oracle's own error rate)."""
    if not scenes:
        raise ValueError("`scenes` must not be empty.")
    return sum(scene_matches(render_array(scene, size), scene) for scene in scenes) / len(scenes)
