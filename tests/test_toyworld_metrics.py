"""Toy world partial metrics: hand-made scenes with known answers, and agreement with `evaluate.score`."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from mtu.toyworld.evaluate import baseline_outputs, evaluation_set, score
from mtu.toyworld.metrics import example_record, preserved, shape_attributes, summarize
from mtu.toyworld.oracle import try_parse
from mtu.toyworld.scene import Scene, Shape, render
from mtu.toyworld.tasks import EDIT_KINDS, Edit

CIRCLE = Shape("circle", "red", "large", "top left")
SQUARE = Shape("square", "blue", "small", "center")
TARGET = Scene("black", (CIRCLE, SQUARE))
ALL_RIGHT = {"kind": 1.0, "colour": 1.0, "size": 1.0, "position": 1.0, "background": 1.0, "count": 1.0,
             "parsed": 1.0}


def attributes_of(scene: Scene) -> dict:
    """The attributes of a crisp render of `scene` against TARGET (the render must parse back exactly)."""
    parsed = try_parse(render(scene))
    assert parsed == scene
    return shape_attributes(parsed, TARGET)


def test_the_target_itself_scores_one_everywhere():
    assert attributes_of(TARGET) == ALL_RIGHT


@pytest.mark.parametrize("scene, wrong", [
    (Scene("black", (replace(CIRCLE, colour="green"), SQUARE)), {"colour": 0.5}),
    (Scene("black", (replace(CIRCLE, position="top right"), SQUARE)), {"position": 0.5}),
    (Scene("black", (CIRCLE, replace(SQUARE, kind="triangle"))), {"kind": 0.5}),
    (Scene("black", (CIRCLE, replace(SQUARE, size="large"))), {"size": 0.5}),
    (Scene("white", (CIRCLE, SQUARE)), {"background": 0.0}),
    (Scene("black", (SQUARE,)), {"kind": 0.5, "colour": 0.5, "size": 0.5, "position": 0.5, "count": 0.0}),
    (Scene("black", (CIRCLE, SQUARE, Shape("triangle", "green", "small", "bottom"))), {"count": 0.0}),
])
def test_one_mistake_costs_exactly_its_attribute(scene, wrong):
    assert attributes_of(scene) == {**ALL_RIGHT, **wrong}


def test_matching_follows_the_shapes_not_their_order():
    # Both shapes moved into each other's cells: kind, colour and size still match one-to-one.
    swapped = Scene("black", (replace(CIRCLE, position="center"), replace(SQUARE, position="top left")))
    assert attributes_of(swapped) == {**ALL_RIGHT, "position": 0.0}


def test_a_blank_image_of_another_background():
    parsed = try_parse(Image.new("RGB", (32, 32), (245, 245, 245)))
    assert parsed == Scene("white")
    assert shape_attributes(parsed, TARGET) == {"kind": 0.0, "colour": 0.0, "size": 0.0, "position": 0.0,
                                                "background": 0.0, "count": 0.0, "parsed": 1.0}


def test_targets_without_shapes():
    empty = Scene("black")
    assert shape_attributes(Scene("black"), empty) == ALL_RIGHT
    assert shape_attributes(Scene("black", (SQUARE,)), empty) == {
        **ALL_RIGHT, "kind": 0.0, "colour": 0.0, "size": 0.0, "position": 0.0, "count": 0.0}


def unparseable_image() -> np.ndarray:
    """Sixteen separate red dots on black: more than three shapes, so no valid scene."""
    array = np.zeros((32, 32, 3), dtype=np.uint8)
    for row in range(2, 32, 8):
        for column in range(2, 32, 8):
            array[row:row + 3, column:column + 3] = (230, 30, 30)
    return array


def test_an_unparseable_image_scores_zero_everywhere():
    image = unparseable_image()
    assert try_parse(image) is None
    assert shape_attributes(None, TARGET) == {name: 0.0 for name in ALL_RIGHT}


RECOLOUR = Edit("recolour", "make the circle green", TARGET,
                Scene("black", (replace(CIRCLE, colour="green"), SQUARE)), CIRCLE)


def test_preserved_accepts_the_correct_edit_and_rejects_collateral_damage():
    assert preserved(try_parse(render(RECOLOUR.after)), RECOLOUR)
    assert preserved(RECOLOUR.before, RECOLOUR)  # doing nothing damages nothing ("copied" catches it)
    damaged = Scene("black", (replace(CIRCLE, colour="green"), replace(SQUARE, colour="yellow")))
    assert not preserved(damaged, RECOLOUR)
    assert not preserved(Scene("white", RECOLOUR.after.shapes), RECOLOUR)  # background changed
    assert not preserved(None, RECOLOUR)


def test_preserved_for_background_and_add_edits():
    background = Edit("background", "change the background to white", TARGET, Scene("white", TARGET.shapes))
    assert preserved(background.after, background)
    assert not preserved(Scene("white", (CIRCLE,)), background)
    added = Shape("triangle", "green", "small", "bottom")
    add = Edit("add", "add a small green triangle at the bottom", TARGET,
               Scene("black", TARGET.shapes + (added,)), added)
    assert preserved(add.after, add)
    assert not preserved(Scene("black", (CIRCLE, added)), add)  # the square was lost
    with pytest.raises(TypeError, match="`edit`"):
        preserved(TARGET, TARGET)


def test_edit_records_of_the_target_and_of_the_input():
    for example in evaluation_set("edit", 4):
        right = example_record(example, example.target)
        assert right["exact"] and right["success"] and right["preserved"] and not right["copied"]
        assert right["kind"] == example.edit.kind and right["attr_colour"] == 1.0
        assert right["fidelity_psnr"] == 100.0  # identical images: capped, not inf
        copy = example_record(example, example.image)
        assert copy["copied"] and not copy["exact"] and copy["preserved"]
        assert try_parse(unparseable_image()) is None
        garbage = example_record(example, unparseable_image())
        assert not garbage["preserved"] and not garbage["copied"] and garbage["attr_parsed"] == 0.0


@pytest.mark.parametrize("task", ["edit", "inpaint"])
def test_records_agree_with_evaluate_score(task):
    examples = evaluation_set(task, 8)
    for outputs in ([example.target for example in examples], baseline_outputs(examples)):
        records = [example_record(example, output) for example, output in zip(examples, outputs)]
        reference = score(examples, outputs)
        assert np.mean([record["success"] for record in records]) == reference["success"]
        assert np.mean([record["fidelity_psnr"] for record in records]) == pytest.approx(reference["fidelity_psnr"])
        if task == "inpaint":
            assert np.mean([record["removed"] for record in records]) == reference["removed"]
            assert np.mean([record["exact"] for record in records]) == reference["preserved"]


def test_sr_and_t2i_records():
    example = evaluation_set("sr", 1)[0]
    perfect = example_record(example, example.target)
    assert perfect["read_back"] and perfect["psnr"] == 100.0 and perfect["ssim"] == pytest.approx(1.0)
    blurry = example_record(example, baseline_outputs([example])[0])
    assert blurry["psnr"] < 100.0 and blurry["ssim"] < 1.0
    t2i = evaluation_set("t2i", 1)[0]
    assert example_record(t2i, t2i.target) == {**{f"attr_{name}": 1.0 for name in ALL_RIGHT}, "exact": True}


def test_summarize_edit_records():
    examples = evaluation_set("edit", 12)
    outputs = [example.target if index % 3 else example.image for index, example in enumerate(examples)]
    records = [example_record(example, output) for example, output in zip(examples, outputs)]
    summary = summarize(records)
    assert summary["exact"]["value"] == pytest.approx(8 / 12) and summary["exact"]["count"] == 12
    assert summary["exact"]["low"] < 8 / 12 < summary["exact"]["high"]
    assert summary["copied"]["value"] == pytest.approx(4 / 12)
    assert summary["attr_kind"]["low"] <= summary["attr_kind"]["value"] <= summary["attr_kind"]["high"]
    assert "kind" not in summary  # strings are not summarized
    assert set(summary["per_kind"]) <= set(EDIT_KINDS)
    assert sum(entry["count"] for entry in summary["per_kind"].values()) == len(records)
    assert sum(entry["exact"]["value"] * entry["count"] for entry in summary["per_kind"].values()) == \
        pytest.approx(8)


def test_summarize_refuses_mixed_records():
    edit = example_record(evaluation_set("edit", 1)[0], Image.new("RGB", (32, 32)))
    t2i = example_record(evaluation_set("t2i", 1)[0], Image.new("RGB", (32, 32)))
    with pytest.raises(ValueError, match="`records`"):
        summarize([edit, t2i])
    with pytest.raises(ValueError, match="`records`"):
        summarize([])


def test_table_cells_of_a_summary():
    from mtu.toyworld.metrics import attribute_cell, interval_cell

    summary = {f"attr_{name}": {"value": value} for name, value in
               zip(("kind", "colour", "size", "position", "background"), (0.571, 0.5, 0.68, 0.644, 0.891))}
    assert attribute_cell(summary) == "0.57 / 0.50 / 0.68 / 0.64 / 0.89"
    assert interval_cell({"value": 0.046875, "low": 0.0161, "high": 0.1289}) == "0.047 (0.016-0.129)"
