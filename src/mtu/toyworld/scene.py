"""A seeded toy world with exact ground truth: scenes of 1-3 flat shapes on a plain background (issue 4).

A scene is a background colour and up to three shapes, each in its own cell of a 3x3 grid, so shapes never
overlap and every attribute (kind, colour, size, cell) can be read back from pixels by `oracle.parse_scene`.
The caption is a deterministic function of the scene, which makes text-to-image faithfulness checkable.

Splits are decided by the scene itself (a hash of its caption), not by the seed, so train and held-out scenes
are disjoint whatever seeds and counts are used.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Far apart in RGB, so nearest-colour matching tolerates noise and blur of generated images.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 70, 235),
    "yellow": (245, 225, 30),
    "purple": (150, 40, 190),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
SHAPE_COLOURS = ("red", "green", "blue", "yellow", "purple", "white", "black")
BACKGROUND_COLOURS = ("black", "white", "gray")
KINDS = ("circle", "square", "triangle")
SIZES = ("small", "large")
# Cells of the 3x3 grid, row-major; the index is the canonical order of shapes in a scene.
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
POSITION_PHRASES = {
    "top left": "at the top left", "top": "at the top", "top right": "at the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "at the bottom left", "bottom": "at the bottom", "bottom right": "at the bottom right",
}
MAX_SHAPES = 3
# Half-extent of a shape as a fraction of the cell side; the gaps keep neighbouring shapes apart.
HALF_EXTENT = {"small": 0.2, "large": 0.4}
MIN_SIZE, MAX_SIZE = 32, 128
TEST_FRACTION_DENOMINATOR = 10  # one scene in ten (by caption hash) is held out
HELDOUT_SEED = 20_241_104


def _check_choice(field: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"`{field}` must be one of {allowed}, got {value!r}.")


@dataclass(frozen=True)
class Shape:
    """One flat shape occupying one grid cell.

    Args:
        kind: "circle", "square" or "triangle" (upward-pointing, isosceles).
        colour: A name from `SHAPE_COLOURS`.
        size: "small" or "large".
        position: The grid cell, a name from `POSITIONS` (e.g. "top left", "center").
    """

    kind: str
    colour: str
    size: str
    position: str

    def __post_init__(self):
        _check_choice("kind", self.kind, KINDS)
        _check_choice("colour", self.colour, SHAPE_COLOURS)
        _check_choice("size", self.size, SIZES)
        _check_choice("position", self.position, POSITIONS)

    def describe(self) -> str:
        """Noun phrase with every attribute, e.g. "a small red circle at the top left"."""
        return f"a {self.size} {self.colour} {self.kind} {POSITION_PHRASES[self.position]}"


@dataclass(frozen=True)
class Scene:
    """A background colour and 0-3 non-overlapping shapes; shapes are stored in canonical (cell) order, so two
    scenes with the same content are equal and hash alike.

    Args:
        background: A name from `BACKGROUND_COLOURS`.
        shapes: Up to `MAX_SHAPES` shapes in distinct cells, none of the background's colour. Sampled scenes have
            at least one; an empty scene arises from removing the last shape.
    """

    background: str
    shapes: tuple[Shape, ...] = ()

    def __post_init__(self):
        _check_choice("background", self.background, BACKGROUND_COLOURS)
        shapes = tuple(self.shapes)
        if len(shapes) > MAX_SHAPES or not all(isinstance(shape, Shape) for shape in shapes):
            raise ValueError(f"`shapes` must be at most {MAX_SHAPES} Shape objects, got {self.shapes!r}.")
        cells = [shape.position for shape in shapes]
        if len(set(cells)) != len(cells):
            raise ValueError(f"`shapes` must occupy distinct cells, got positions {cells}.")
        for shape in shapes:
            if shape.colour == self.background:
                raise ValueError(f"`shapes` must differ from the background colour {self.background!r}, got {shape}.")
        object.__setattr__(self, "shapes", tuple(sorted(shapes, key=lambda shape: POSITIONS.index(shape.position))))

    def free_positions(self) -> list[str]:
        taken = {shape.position for shape in self.shapes}
        return [position for position in POSITIONS if position not in taken]


def caption(scene: Scene) -> str:
    """English description from the scene graph, in canonical order, e.g.
    "a large red circle at the top left and a small blue square in the center, on a black background"."""
    if not scene.shapes:
        return f"an empty {scene.background} background"
    phrases = [shape.describe() for shape in scene.shapes]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"{listed}, on a {scene.background} background"


def partial_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A partial description, as real image captions are: a random non-empty subset of the shapes (each kept with
    probability 1/2, at least one), each named by its kind with its size, colour and position each said with
    probability 1/2, e.g. "a red circle and a square at the bottom". It never names the background: in the toy
    world a caption that ends in its background (`caption`) lists everything in the image, one without it does
    not, so a model learns that shapes a text leaves unsaid may still be there (edit instructions say nothing of
    the shapes they leave alone). A scene without shapes gets its full caption.
    """
    if not scene.shapes:
        return caption(scene)
    keep = rng.random(len(scene.shapes)) < 0.5
    if not keep.any():
        keep[rng.integers(len(scene.shapes))] = True
    phrases = []
    for shape, kept in zip(scene.shapes, keep):
        if kept:
            said = [int(draw < 0.5) for draw in rng.random(3)]
            words = ["a"] + [shape.size] * said[0] + [shape.colour] * said[1] + [shape.kind]
            words += [POSITION_PHRASES[shape.position]] * said[2]
            phrases.append(" ".join(words))
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"`size` must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}.")
    return size


def cell_geometry(position: str, size: int) -> tuple[float, float, float]:
    """(centre x, centre y, cell side) in pixels of a `size` x `size` image."""
    _check_choice("position", position, POSITIONS)
    row, column = divmod(POSITIONS.index(position), 3)
    cell = size / 3
    return (column + 0.5) * cell, (row + 0.5) * cell, cell


def shape_box(shape: Shape, size: int = 32) -> tuple[int, int, int]:
    """(left, top, side) of the pixel box `shape` is drawn in; the side is odd so shapes are symmetric about a
    pixel column, which keeps small shapes' pixel patterns the same in every cell and at every image size."""
    centre_x, centre_y, cell = cell_geometry(shape.position, _check_size(size))
    side = 2 * math.floor(HALF_EXTENT[shape.size] * cell) + 1
    return round(centre_x - side / 2), round(centre_y - side / 2), side


def shape_mask(shape: Shape, size: int = 32) -> np.ndarray:
    """Boolean (size, size) mask of the pixels `shape` covers, sampled at pixel centres (crisp edges)."""
    left, top, side = shape_box(shape, size)
    half = side / 2
    ys, xs = np.mgrid[0:side, 0:side] + 0.5 - half  # box-local pixel centres, (side, side)
    if shape.kind == "circle":
        local = xs ** 2 + ys ** 2 <= half ** 2
    elif shape.kind == "square":
        local = np.ones((side, side), dtype=bool)
    elif shape.kind == "triangle":
        # Apex at the top centre, base along the bottom edge: the half-width grows linearly downwards.
        local = np.abs(xs) <= (ys + half) / 2
    else:
        raise ValueError(f"`kind` must be one of {KINDS}, got {shape.kind!r}.")
    mask = np.zeros((size, size), dtype=bool)
    mask[top:top + side, left:left + side] = local
    return mask


def render_array(scene: Scene, size: int = 32) -> np.ndarray:
    """(size, size, 3) uint8 rendering of `scene`."""
    array = np.empty((_check_size(size), size, 3), dtype=np.uint8)
    array[:] = COLOURS[scene.background]
    for shape in scene.shapes:
        array[shape_mask(shape, size)] = COLOURS[shape.colour]
    return array


def render(scene: Scene, size: int = 32) -> Image.Image:
    """Crisp RGB rendering of `scene` as a `size` x `size` PIL image."""
    return Image.fromarray(render_array(scene, size), mode="RGB")


def sample_shape(rng: np.random.Generator, background: str, position: str) -> Shape:
    """A random shape at `position` whose colour differs from `background`."""
    colours = [colour for colour in SHAPE_COLOURS if colour != background]
    return Shape(kind=KINDS[rng.integers(len(KINDS))], colour=colours[rng.integers(len(colours))],
                 size=SIZES[rng.integers(len(SIZES))], position=position)


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene: uniform background, 1-3 shapes in distinct random cells."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy Generator, got {type(rng).__name__}.")
    background = BACKGROUND_COLOURS[rng.integers(len(BACKGROUND_COLOURS))]
    count = int(rng.integers(1, MAX_SHAPES + 1))
    cells = rng.choice(len(POSITIONS), size=count, replace=False)
    return Scene(background, tuple(sample_shape(rng, background, POSITIONS[cell]) for cell in cells))


def scene_split(scene: Scene) -> str:
    """"test" for the held-out tenth of all scenes (by a stable hash of the caption), else "train"."""
    digest = hashlib.sha256(caption(scene).encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_FRACTION_DENOMINATOR == 0 else "train"


def make_scenes(seed: int, count: int, split: str = "train") -> list[Scene]:
    """`count` distinct scenes of `split`, drawn from a generator seeded by (seed, split).

    The list is a prefix-stable stream: `make_scenes(s, n)[:k] == make_scenes(s, k)`.
    """
    _check_choice("split", split, ("train", "test"))
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"`count` must be an integer >= 0, got {count!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0, got {seed!r}.")
    return list(_scene_stream(seed, count, split))


@functools.lru_cache(maxsize=8)
def _scene_stream(seed: int, count: int, split: str) -> tuple[Scene, ...]:
    """`make_scenes`' scenes, kept for the next caller: a multi-task run opens one toy-world source per task, all
    with the same seed and count (200,000 scenes take about 40 s to draw)."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    scenes, seen = [], set()
    while len(scenes) < count:
        scene = sample_scene(rng)
        if scene not in seen and scene_split(scene) == split:  # rejection keeps the splits disjoint
            seen.add(scene)
            scenes.append(scene)
    return tuple(scenes)


def heldout_scenes(count: int = 500) -> list[Scene]:
    """The fixed held-out evaluation split: `count` distinct test scenes from a fixed seed."""
    return make_scenes(HELDOUT_SEED, count, split="test")
