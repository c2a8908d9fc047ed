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


def test_small_swaps_turn_one_small_circle_or_square_into_the_other(info):
    scene = Scene("gray", (Shape("circle", "red", "small", "top left"), Shape("square", "blue", "small", "center"),
                           Shape("circle", "green", "large", "bottom right")))
    found = info.small_swaps(scene)  # the large circle stays
    assert [tuple(shape.kind for shape in other.shapes) for other in found] == [
        ("square", "square", "circle"), ("circle", "circle", "circle")]
    assert all(_differences(scene, other) == 1 for other in found)
    assert info.small_swaps(Scene("gray", (Shape("triangle", "red", "small", "center"),))) == []


def test_latent_decoding_of_the_first_examples_is_paired_with_their_pixels(info):
    """Each example gets a pixel and a latent verdict for the whole neighbourhood, and one for the swaps exactly
    when it holds a small circle or square (None otherwise)."""
    from mtu.toyworld.evaluate import evaluation_set

    examples = evaluation_set("sr", 10)  # the first nine hold a small circle or square, the tenth does not
    found = info.measure_latent(examples)
    assert {key: len(value) for key, value in found.items()} == dict.fromkeys(found, 10)
    assert found["pixels_swaps"][9] is None and found["pixels_swaps"][8] is not None
    assert all(isinstance(value, bool) for value in found["pixels"] + found["latents"])
    for index, example in enumerate(examples):
        has_swaps = bool(info.small_swaps(example.target_scene))
        assert (found["pixels_swaps"][index] is not None) == has_swaps == (found["latents_swaps"][index] is not None)


def test_model_without_latent_is_refused_in_one_line(info, capsys):
    with pytest.raises(SystemExit):
        info.main(["--model", "toyworld"])
    assert "--model toyworld: only with --latent" in capsys.readouterr().err
