"""Toy world scenes: determinism, validation, captions, rendering and disjoint splits."""

import numpy as np
import pytest

from mtu.toyworld.scene import (COLOURS, POSITIONS, Scene, Shape, caption, heldout_scenes, make_scenes,
                                partial_caption, render, render_array, sample_scene, scene_split, shape_mask)


def test_make_scenes_is_deterministic_and_prefix_stable():
    assert make_scenes(3, 40) == make_scenes(3, 40)
    assert make_scenes(3, 40)[:10] == make_scenes(3, 10)
    assert make_scenes(3, 40) != make_scenes(4, 40)


def test_splits_are_disjoint_by_scene_identity():
    train = make_scenes(0, 2000, "train")
    test = heldout_scenes(300)
    assert len(set(train)) == 2000 and len(set(test)) == 300
    assert not set(train) & set(test)
    assert all(scene_split(scene) == "test" for scene in test)


def test_sampled_scenes_are_valid():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng)
        assert 1 <= len(scene.shapes) <= 3
        assert all(shape.colour != scene.background for shape in scene.shapes)


def test_scene_validation_names_field_and_value():
    with pytest.raises(ValueError, match="background.*'pink'"):
        Scene("pink")
    with pytest.raises(ValueError, match="kind.*'hexagon'"):
        Shape("hexagon", "red", "small", "center")
    with pytest.raises(ValueError, match="distinct cells"):
        Scene("black", (Shape("circle", "red", "small", "left"), Shape("square", "blue", "large", "left")))
    with pytest.raises(ValueError, match="background colour"):
        Scene("black", (Shape("circle", "black", "small", "left"),))


def test_scene_order_is_canonical_and_caption_regular():
    first = Shape("circle", "red", "large", "top left")
    second = Shape("square", "blue", "small", "center")
    assert Scene("black", (second, first)) == Scene("black", (first, second))
    assert caption(Scene("black", (second, first))) == (
        "a large red circle at the top left and a small blue square in the center, on a black background")
    assert caption(Scene("gray")) == "an empty gray background"


def test_partial_caption_names_a_subset_of_the_shapes_and_never_the_background():
    first = Shape("circle", "red", "large", "top left")
    second = Shape("square", "blue", "small", "center")
    scene = Scene("black", (first, second))
    rng = np.random.default_rng(0)
    texts = [partial_caption(scene, rng) for _ in range(400)]
    assert not any("background" in text for text in texts)
    assert all("circle" in text or "square" in text for text in texts)  # at least one shape
    # every subset of shapes and each attribute's presence and absence occur
    assert {("circle" in text, "square" in text) for text in texts} == {(True, False), (False, True), (True, True)}
    for shape, words in ((first, ("large", "red", "at the top left")), (second, ("small", "blue", "in the center"))):
        for word in words:
            assert 0.3 < np.mean([word in text for text in texts if shape.kind in text]) < 0.7
    assert "a circle" in texts and "a large red circle at the top left and a small blue square in the center" in texts
    assert partial_caption(Scene("gray"), rng) == caption(Scene("gray"))
    assert [partial_caption(scene, np.random.default_rng(5)) for _ in range(3)] == [
        partial_caption(scene, np.random.default_rng(5))] * 3


@pytest.mark.parametrize("size", [32, 48, 64])
def test_render_is_crisp_and_shapes_do_not_touch(size):
    scene = Scene("gray", tuple(Shape("square", "red", "large", position) for position in POSITIONS[:3]))
    image = render(scene, size)
    assert image.size == (size, size) and image.mode == "RGB"
    colours = {tuple(pixel) for pixel in render_array(scene, size).reshape(-1, 3)}
    assert colours == {COLOURS["gray"], COLOURS["red"]}  # no anti-aliasing
    masks = [shape_mask(shape, size) for shape in scene.shapes]
    grown = [mask | np.roll(mask, 1, 1) | np.roll(mask, -1, 1) for mask in masks]
    assert not (grown[0] & masks[1]).any() and not (grown[1] & masks[2]).any()


def test_render_rejects_bad_size():
    with pytest.raises(ValueError, match="size.*16"):
        render(Scene("black"), 16)
