"""The SR information benchmark: its one-attribute neighbours are right, and its decoder shows the finding it
reports (JPEG's 4:2:0 chroma subsampling, not the rest of the degradation, makes 16-px toy inputs ambiguous)."""

from dataclasses import fields

import pytest

from mtu.toyworld.scene import Scene, Shape

from .scripts import load_benchmark


@pytest.fixture(scope="module")
def info():
    return load_benchmark("sr_information")


def _differences(first: Scene, second: Scene) -> int:
    by_cell = {shape.position: shape for shape in first.shapes}
    count = int(first.background != second.background)
    for shape in second.shapes:
        old = by_cell.get(shape.position)
        if old is None:  # moved here: the shape at the old cell is gone, one attribute (position) changed
            count += 1
        else:
            count += sum(getattr(old, f.name) != getattr(shape, f.name) for f in fields(Shape))
    return count


def test_neighbours_differ_in_exactly_one_attribute(info):
    scene = Scene("gray", (Shape("circle", "red", "small", "top left"), Shape("square", "blue", "large", "center")))
    found = info.neighbours(scene)
    assert len(found) == len(set(found)) and scene not in found
    assert all(_differences(scene, other) == 1 for other in found)
    # Per shape: 2 kinds + 6 colours (all 7 shape colours but its own) + 1 size + 7 free cells; backgrounds: black
    # and white (gray is taken).
    assert len(found) == 2 * (2 + 6 + 1 + 7) + 2


def test_chroma_subsampling_is_what_hides_small_shapes(info):
    full, sub = (info.SETTINGS["downscale, JPEG 4:4:4 at quality 100"],
                 info.SETTINGS["downscale, JPEG 4:2:0 at quality 100"])
    assert info.measure(full, 32, count=12)["decodable"] == 1.0
    assert info.measure(sub, 32, count=12)["decodable"] < 0.9
