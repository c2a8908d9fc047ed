"""Toy world task pairs: every edit changes exactly the pixels its instruction names, and nothing else."""

import re

import numpy as np
import pytest
from PIL import Image

from mtu.toyworld.scene import Scene, Shape, caption, make_scenes, shape_mask
from mtu.toyworld.tasks import (EDIT_KINDS, edit_pair, inpaint_pair, kind_weights, possible_edits, refer, sample_edit,
                                sample_removal, sr_input, sr_pair, t2i_pair)

SIZE = 32


def expected_change(edit, size=SIZE) -> np.ndarray:
    """The pixels the instruction names, from the edit's meaning (not from the rendered images)."""
    if edit.kind == "background":
        covered = np.zeros((size, size), dtype=bool)
        for shape in edit.before.shapes:
            covered |= shape_mask(shape, size)
        return ~covered
    region = shape_mask(edit.shape, size)
    if edit.kind == "move":
        moved = next(shape for shape in edit.after.shapes if shape not in edit.before.shapes)
        region = region | shape_mask(moved, size)
    return region


def test_every_edit_changes_exactly_the_named_pixels():
    rng = np.random.default_rng(0)
    seen = set()
    for scene in make_scenes(1, 300):
        edit = sample_edit(scene, rng)
        seen.add(edit.kind)
        fields = edit_pair(edit, SIZE)
        changed = (np.asarray(fields["condition"]) != np.asarray(fields["target"])).any(-1)
        assert np.array_equal(changed, expected_change(edit)), edit.instruction
        assert fields["input_caption"] == caption(edit.before) and fields["output_caption"] == caption(edit.after)
    assert seen == set(EDIT_KINDS)


def test_references_are_unambiguous():
    red_circle = Shape("circle", "red", "small", "top left")
    scene = Scene("black", (red_circle, Shape("circle", "red", "large", "right"),
                            Shape("square", "blue", "small", "center")))
    assert refer(scene, red_circle) == "the red circle at the top left"
    assert refer(scene, scene.shapes[1]) == "the square"
    assert refer(scene, scene.shapes[2]) == "the red circle on the right"
    lone = Scene("black", (red_circle, Shape("square", "red", "small", "center")))
    assert refer(lone, red_circle) == "the circle"


def test_inpaint_pair_masks_the_removed_shape():
    rng = np.random.default_rng(2)
    for scene in make_scenes(2, 50):
        edit = sample_removal(scene, rng)
        fields = inpaint_pair(edit, SIZE)
        assert fields["prompt"].startswith("remove the ")
        mask = np.asarray(fields["mask"]) > 127
        changed = (np.asarray(fields["condition"]) != np.asarray(fields["target"])).any(-1)
        assert np.array_equal(mask, changed)
        assert len(edit.after.shapes) == len(scene.shapes) - 1


def test_t2i_and_sr_pairs():
    scene = make_scenes(5, 1)[0]
    fields = t2i_pair(scene, SIZE)
    assert fields["prompt"] == caption(scene) and fields["target"].size == (SIZE, SIZE)
    hr = sr_pair(scene, 64)["target"]
    low = sr_input(hr, seed=7)
    assert isinstance(low, Image.Image) and low.size == (32, 32)
    assert np.array_equal(np.asarray(low), np.asarray(sr_input(hr, seed=7)))


def test_sample_edit_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kinds"):
        sample_edit(make_scenes(0, 1)[0], np.random.default_rng(0), kinds=("explode",))


def test_unweighted_edit_draws_are_unchanged():
    """Kind weights came after the long run started: without them the draw is the one that run's data used."""
    scenes = make_scenes(0, 24)
    kinds = "".join(sample_edit(scene, np.random.default_rng(i)).kind[0] for i, scene in enumerate(scenes))
    assert kinds == "brbbmmrbmrbrmbrbmmbrbamr"


def test_kind_weights_set_the_mix():
    scenes = [scene for scene in make_scenes(1, 3000) if len(possible_edits(scene)) == len(EDIT_KINDS)]
    rng = np.random.default_rng(0)
    kinds = [sample_edit(scene, rng, weights={"recolour": 3, "move": 3, "background": 0}).kind for scene in scenes]
    counts = {kind: kinds.count(kind) for kind in EDIT_KINDS}
    n = len(kinds)
    assert n > 1000 and counts["background"] == 0
    for kind, share in {"recolour": 3 / 8, "move": 3 / 8, "add": 1 / 8, "remove": 1 / 8}.items():
        assert abs(counts[kind] / n - share) < 5 * np.sqrt(share * (1 - share) / n), (kind, counts)


def test_kind_weights_fall_back_to_the_applicable_kinds():
    full = Scene("white", tuple(Shape("circle", "red", "small", position) for position in
                                ("top left", "top right", "bottom left")))  # MAX_SHAPES: nothing can be added
    assert "add" not in possible_edits(full)
    rng = np.random.default_rng(0)
    kinds = {sample_edit(full, rng, weights={kind: 0 for kind in EDIT_KINDS if kind != "add"}).kind
             for _ in range(200)}
    assert kinds == set(possible_edits(full))  # only "add" weighs, and it cannot apply: uniform over the rest


@pytest.mark.parametrize("weights, message", [
    ({"explode": 1}, "unknown edit kind 'explode'"),
    ({"move": -1}, "'move' must be a finite number >= 0, got -1"),
    ({"move": float("nan")}, "'move' must be a finite number"),
    ({"move": "3"}, "'move' must be a finite number"),
    (dict.fromkeys(EDIT_KINDS, 0), "at least one edit kind needs a weight > 0"),
    ([3, 3], "must be a mapping"),
])
def test_kind_weights_reject_bad_values(weights, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        kind_weights(weights)


def test_recolouring_changes_only_the_named_shape_and_names_it():
    from dataclasses import replace

    from mtu.toyworld.scene import Scene, Shape
    from mtu.toyworld.tasks import recolouring

    circle, square = Shape("circle", "red", "small", "top left"), Shape("square", "blue", "large", "center")
    edit = recolouring(Scene("gray", (circle, square)), circle, "green")
    assert edit.kind == "recolour" and edit.instruction == "make the circle green" and edit.shape == circle
    assert edit.after == Scene("gray", (replace(circle, colour="green"), square))
