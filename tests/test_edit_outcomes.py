"""`benchmarks/edit_outcomes.py`: each edit output sorted into one outcome, on hand-made scenes with known answers."""

import pytest

from mtu.toyworld.scene import Scene, Shape
from mtu.toyworld.tasks import Edit

from .scripts import load_benchmark

RED = Shape("circle", "red", "small", "top left")
BLUE = Shape("square", "blue", "large", "center")
BEFORE = Scene("black", (RED, BLUE))


def _scene(background="black", *shapes):
    return Scene(background, tuple(sorted(shapes, key=lambda s: s.position)))


RECOLOUR = Edit("recolour", "make the circle green", BEFORE,
                _scene("black", Shape("circle", "green", "small", "top left"), BLUE), RED)
MOVE = Edit("move", "move the circle to the bottom", BEFORE,
            _scene("black", Shape("circle", "red", "small", "bottom"), BLUE), RED)
BACKGROUND = Edit("background", "make the background white", BEFORE, _scene("white", RED, BLUE))


@pytest.mark.parametrize("edit, parsed, expected", [
    (RECOLOUR, RECOLOUR.after, "exact"),
    (RECOLOUR, BEFORE, "unchanged"),
    (RECOLOUR, None, "neither"),
    # the circle recoloured, the square lost
    (RECOLOUR, _scene("black", Shape("circle", "green", "small", "top left")), "change only"),
    # the square kept, the circle recoloured wrongly
    (RECOLOUR, _scene("black", Shape("circle", "yellow", "small", "top left"), BLUE), "rest only"),
    (RECOLOUR, _scene("white", Shape("circle", "yellow", "small", "top left"), BLUE), "neither"),
    # a move: both its cells right but the background wrong; then the circle copied instead of moved
    (MOVE, _scene("gray", Shape("circle", "red", "small", "bottom"), BLUE), "change only"),
    (MOVE, _scene("black", RED, Shape("circle", "red", "small", "bottom"), BLUE), "rest only"),
    (BACKGROUND, _scene("white", RED), "change only"),
    (BACKGROUND, _scene("gray", RED, BLUE), "rest only"),
])
def test_outcomes(edit, parsed, expected):
    assert load_benchmark("edit_outcomes").outcome(edit, parsed) == expected
