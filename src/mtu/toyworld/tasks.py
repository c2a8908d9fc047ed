"""Exact training/evaluation pairs of the toy world, one builder per task.

Each builder returns the role -> value dict the data layer decodes a sample into before tensor conversion
(`mtu.data.examples.make_example`): PIL images under "target", "condition", "mask" and strings under "prompt",
"input_caption", "output_caption". Edits and removals are described by an `Edit`, which keeps the scenes before
and after so that outputs can be scored by `oracle` against exact ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from ..data.degradation import DegradationConfig, degrade
from .scene import (BACKGROUND_COLOURS, MAX_SHAPES, POSITION_PHRASES, SHAPE_COLOURS, Scene, Shape, caption,
                    render, sample_shape, shape_mask)

TASKS = ("t2i", "edit", "sr", "inpaint")  # the toy world's tasks, in the order reports list them
EDIT_KINDS = ("recolour", "add", "remove", "move", "background")
# Real-ESRGAN's first-stage ranges (the data layer's defaults) are set for photos of hundreds of pixels: a 3-pixel
# blur or 30 levels of noise on a 32-pixel toy image leaves barely a shape to recover. The toy world runs the same
# degradation code with ranges scaled to its image size. Its JPEG keeps full colour resolution (4:4:4): with the
# encoders' default 4:2:0, a 16-pixel input holds colour at 8x8 and the scene can no longer be told from its
# one-attribute neighbours in 45% of held-out scenes (4% with 4:4:4; benchmarks/sr_information.py, issue 11).
TOY_DEGRADATION = DegradationConfig(blur_kernel_size=(3, 7), blur_sigma=(0.2, 1.0), noise_sigma=(1.0, 10.0),
                                    poisson_scale=(0.05, 1.0), jpeg_quality=(60, 95), jpeg_subsampling="4:4:4")


@dataclass(frozen=True)
class Edit:
    """One instruction and its exact effect.

    Args:
        kind: One of `EDIT_KINDS`.
        instruction: The English instruction, unambiguous in `before`.
        before: The input scene.
        after: The scene the instruction asks for.
        shape: The shape referred to in `before` (recolour, remove, move) or added (add); None for background.
    """

    kind: str
    instruction: str
    before: Scene
    after: Scene
    shape: Shape | None = None

    def __post_init__(self):
        if self.kind not in EDIT_KINDS:
            raise ValueError(f"`kind` must be one of {EDIT_KINDS}, got {self.kind!r}.")
        if (self.shape is None) != (self.kind == "background"):
            raise ValueError(f"`shape` must be None exactly for background edits, got {self.shape!r} for "
                             f"kind {self.kind!r}.")


def refer(scene: Scene, shape: Shape) -> str:
    """The shortest unambiguous name of `shape` in `scene`: "the circle" when it is the only circle, else "the
    red circle" when that is unique, else "the red circle at the top left"."""
    if shape not in scene.shapes:
        raise ValueError(f"`shape` {shape} is not in the scene.")
    same_kind = [other for other in scene.shapes if other.kind == shape.kind]
    if len(same_kind) == 1:
        return f"the {shape.kind}"
    if sum(other.colour == shape.colour for other in same_kind) == 1:
        return f"the {shape.colour} {shape.kind}"
    return f"the {shape.colour} {shape.kind} {POSITION_PHRASES[shape.position]}"


def _without(scene: Scene, shape: Shape) -> tuple[Shape, ...]:
    return tuple(other for other in scene.shapes if other != shape)


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def recolouring(scene: Scene, shape: Shape, colour: str) -> Edit:
    """The edit "make <shape> <colour>" of `scene`: `shape` in `colour`, everything else unchanged."""
    after = Scene(scene.background, _without(scene, shape) + (replace(shape, colour=colour),))
    return Edit("recolour", f"make {refer(scene, shape)} {colour}", scene, after, shape)


def _recolour(scene: Scene, rng: np.random.Generator) -> Edit:
    shape = _pick(rng, list(scene.shapes))
    return recolouring(scene, shape, _pick(rng, [c for c in SHAPE_COLOURS if c not in (shape.colour, scene.background)]))


def _add(scene: Scene, rng: np.random.Generator) -> Edit:
    shape = sample_shape(rng, scene.background, _pick(rng, scene.free_positions()))
    after = Scene(scene.background, scene.shapes + (shape,))
    instruction = f"add a {shape.size} {shape.colour} {shape.kind} {POSITION_PHRASES[shape.position]}"
    return Edit("add", instruction, scene, after, shape)


def _remove(scene: Scene, rng: np.random.Generator) -> Edit:
    shape = _pick(rng, list(scene.shapes))
    return Edit("remove", f"remove {refer(scene, shape)}", scene, Scene(scene.background, _without(scene, shape)),
                shape)


def _move(scene: Scene, rng: np.random.Generator) -> Edit:
    shape = _pick(rng, list(scene.shapes))
    position = _pick(rng, scene.free_positions())
    after = Scene(scene.background, _without(scene, shape) + (replace(shape, position=position),))
    instruction = f"move {refer(scene, shape)} to the {position}"
    return Edit("move", instruction, scene, after, shape)


def _background(scene: Scene, rng: np.random.Generator) -> Edit:
    colour = _pick(rng, _background_options(scene))
    return Edit("background", f"change the background to {colour}", scene, Scene(colour, scene.shapes))


_BUILDERS = {"recolour": _recolour, "add": _add, "remove": _remove, "move": _move, "background": _background}


def _background_options(scene: Scene) -> list[str]:
    used = {shape.colour for shape in scene.shapes} | {scene.background}
    return [colour for colour in BACKGROUND_COLOURS if colour not in used]


def possible_edits(scene: Scene) -> tuple[str, ...]:
    """The edit kinds that apply to `scene`: add needs a free slot, recolour/remove/move need a shape, and a
    background change needs a background colour that no shape has (a gray scene with black and white shapes
    has none)."""
    applies = {"recolour": bool(scene.shapes), "add": len(scene.shapes) < MAX_SHAPES,
               "remove": bool(scene.shapes), "move": bool(scene.shapes),
               "background": bool(_background_options(scene))}
    return tuple(kind for kind in EDIT_KINDS if applies[kind])


def sample_edit(scene: Scene, rng: np.random.Generator, kinds: tuple[str, ...] = EDIT_KINDS,
                weights: dict[str, float] | None = None) -> Edit:
    """A random edit of `scene`, of a kind drawn among `kinds` that apply to it: uniformly, or with `weights`
    ({kind: relative weight}, a kind left out weighs 1, see `kind_weights`) in proportion to them. Weight 0 leaves
    a kind out, unless no kind of nonzero weight applies to the scene: then every applicable kind is drawn
    uniformly (a training source never stops on a scene). Without `weights` the draw is the same as before they
    existed (one `rng.integers`), so earlier runs' data are unchanged."""
    unknown = [kind for kind in kinds if kind not in EDIT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"`kinds` must be a non-empty subset of {EDIT_KINDS}, got {kinds!r}.")
    usable = [kind for kind in possible_edits(scene) if kind in kinds]
    if not usable:
        raise ValueError(f"none of `kinds` {kinds!r} applies to the scene {caption(scene)!r}.")
    if weights is None:
        return _BUILDERS[_pick(rng, usable)](scene, rng)
    resolved = kind_weights(weights)
    chances = np.array([resolved[kind] for kind in usable])
    if chances.sum() == 0:
        chances = np.ones(len(usable))
    kind = usable[int(rng.choice(len(usable), p=chances / chances.sum()))]
    return _BUILDERS[kind](scene, rng)


def kind_weights(weights: dict[str, float]) -> dict[str, float]:
    """{kind: weight} over all `EDIT_KINDS` from a partial mapping (a kind left out weighs 1); raises ValueError
    naming the bad kind or weight (weights are finite numbers >= 0, at least one of them > 0)."""
    if not isinstance(weights, dict):
        raise ValueError(f"edit kind weights must be a mapping {{kind: weight}}, got {weights!r}.")
    unknown = [kind for kind in weights if kind not in EDIT_KINDS]
    if unknown:
        raise ValueError(f"unknown edit kind {unknown[0]!r}; the kinds are {EDIT_KINDS}.")
    resolved = {kind: weights.get(kind, 1.0) for kind in EDIT_KINDS}
    for kind, weight in resolved.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight < 0:
            raise ValueError(f"the weight of edit kind {kind!r} must be a finite number >= 0, got {weight!r}.")
    if not any(resolved.values()):
        raise ValueError(f"at least one edit kind needs a weight > 0, got {weights!r}.")
    return {kind: float(weight) for kind, weight in resolved.items()}


def sample_removal(scene: Scene, rng: np.random.Generator) -> Edit:
    """A random object-removal edit ("remove the red circle") for the inpainting tasks."""
    return sample_edit(scene, rng, kinds=("remove",))


def t2i_pair(scene: Scene, size: int = 32) -> dict:
    """Text-to-image: {"prompt": caption, "target": render}."""
    return {"prompt": caption(scene), "target": render(scene, size)}


def edit_pair(edit: Edit, size: int = 32) -> dict:
    """Editing: input image as "condition", the instruction as "prompt", the edited "target" and both captions."""
    return {"condition": render(edit.before, size), "prompt": edit.instruction, "target": render(edit.after, size),
            "input_caption": caption(edit.before), "output_caption": caption(edit.after)}


def removal_mask(edit: Edit, size: int = 32) -> Image.Image:
    """Mode-"L" mask, white (255) where the removed shape was."""
    if edit.kind != "remove":
        raise ValueError(f"`edit.kind` must be 'remove' for a removal mask, got {edit.kind!r}.")
    return Image.fromarray(shape_mask(edit.shape, size).astype(np.uint8) * 255, mode="L")


def inpaint_pair(edit: Edit, size: int = 32) -> dict:
    """Object removal ("inpaint"; with "mask" also usable for "inpaint_mask"): the edit pair plus the mask."""
    fields = edit_pair(edit, size)
    fields["mask"] = removal_mask(edit, size)
    return fields


def sr_pair(scene: Scene, size: int = 64) -> dict:
    """Super-resolution: the high-resolution "target"; the data layer degrades it into the input."""
    return {"target": render(scene, size)}


def sr_input(hr: Image.Image, seed: int, scale: int = 2, config: DegradationConfig = TOY_DEGRADATION) -> Image.Image:
    """The low-resolution input the data layer would make: `degrade` with a generator seeded by `seed`."""
    array = np.asarray(hr.convert("RGB"), dtype=np.float32) / 255.0
    image = torch.from_numpy(array).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    # (3, H / scale, W / scale)
    low = degrade(image, scale=scale, generator=torch.Generator().manual_seed(seed), config=config)
    return Image.fromarray((low.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8), mode="RGB")
