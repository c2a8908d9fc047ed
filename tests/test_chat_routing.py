"""`mtu.chat.route`: the labelled requests (tests/data/chat_intents.tsv) are routed to their task at >= 95%, the
prompt passed on loses the request's framing, typos are read, wording the rules were not written for is read by word
families, alternatives and gaps (tests/data/chat_intents_fresh.tsv), and a user's own task is asked for by its
plug-in's intent hints."""

from __future__ import annotations

import csv
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from mtu.chat import route
from mtu.chat.phrases import find, stem
from mtu.errors import InputError
from mtu.tasks import Intents, Task, base as plugin_registry
from mtu.upcycling import tasks as spec_registry
from mtu.upcycling.tasks import TaskSpec

LABELLED = Path(__file__).parent / "data" / "chat_intents.tsv"
FRESH = Path(__file__).parent / "data" / "chat_intents_fresh.tsv"
BLIND = Path(__file__).parent / "data" / "chat_intents_blind.tsv"  # written by someone who never saw the rules
TARGET = 0.95


def labelled(path: Path = LABELLED) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_the_labelled_requests_are_routed_at_95_percent_or_better():
    rows = labelled()
    assert len(rows) >= 150 and {row["image"] for row in rows} == {"0", "1"}
    wrong = [(row["text"], row["task"], route(row["text"], row["image"] == "1").task) for row in rows
             if route(row["text"], row["image"] == "1").task != row["task"]]
    accuracy = 1 - len(wrong) / len(rows)
    assert accuracy >= TARGET, f"accuracy {accuracy:.3f} < {TARGET}; wrong (text, label, routed): {wrong}"


def test_requests_written_after_the_rules_are_routed_at_95_percent_or_better():
    rows = labelled(FRESH)  # the rules first read 0.70 of them: no task phrase, so all fell back to edit
    assert len(rows) >= 40
    wrong = [(row["text"], row["task"]) for row in rows if route(row["text"], row["image"] == "1").task != row["task"]]
    assert 1 - len(wrong) / len(rows) >= TARGET, wrong


def test_requests_written_blind_to_the_rules_are_routed_at_95_percent_or_better():
    """100 requests (25 per task) written without sight of the rules or of the other sets; measured once after the
    rules were generalised (98/100), kept as a guard (tuning on them would make them a development set)."""
    rows = labelled(BLIND)
    assert len(rows) == 100
    wrong = [(row["text"], row["task"]) for row in rows if route(row["text"], row["image"] == "1").task != row["task"]]
    assert 1 - len(wrong) / len(rows) >= TARGET, wrong


@pytest.mark.parametrize("text, has_image, task, prompt", [
    ("Could you please draw me a yellow circle at the top left?", False, "t2i", "a yellow circle at the top left"),
    ("make a picture of a red square on a black background", False, "t2i", "a red square on a black background"),
    ("could you please make the circle green, thanks!", True, "edit", "make the circle green"),
    ("erase the circle", True, "inpaint", "remove the circle"),
    ("take the triangle away", True, "inpaint", "remove the triangle"),
    ("remvoe the square", True, "inpaint", "remove the square"),
    ("make it sharper", True, "sr", None),
    ("a blue circle at the top right, on a white background", True, "t2i",
     "a blue circle at the top right, on a white background"),
    ("the circle in blue", True, "edit", "the circle in blue"),
    ("the circle in blue", False, "t2i", "the circle in blue"),
    ("/sr whatever", True, "sr", None),
    ("/edit make it blue", False, "edit", "make it blue"),
])
def test_task_and_prompt(text, has_image, task, prompt):
    routed = route(text, has_image)
    assert (routed.task, routed.prompt) == (task, prompt)
    assert routed.needs_image == (task != "t2i")


def test_typos_are_read_and_reported_but_known_words_are_not_touched():
    assert route("drwa a blue circle", False).corrections == (("drwa", "draw"),)
    assert route("more detail please", True).corrections == ()  # "more" is not "move"
    assert route("make it blue", True).corrections == ()  # "blue" is not "blur"


@pytest.mark.parametrize("family, stems_to", [
    (("sharp", "sharper", "sharpest", "sharpness", "sharply"), "sharp"),
    (("blur", "blurry", "blurred", "blurring", "blurriness"), "blur"),
    (("remove", "removed", "removing", "removes"), "remov"),
    (("big", "bigger", "biggest"), "big"),
    (("2x", "3x", "x4"), "2x"),
])
def test_a_word_family_shares_one_stem(family, stems_to):
    assert {stem(word) for word in family} == {stems_to}


@pytest.mark.parametrize("word", ["red", "used", "this", "class", "drawing", "green"])
def test_short_words_plural_looking_words_and_image_nouns_keep_their_form(word):
    assert stem(word) == word  # "drawing" (the image) is not "draw"; "red" is not "r"


def test_a_phrase_has_alternatives_and_gaps_of_zero_to_four_words():
    words = [stem(w) for w in "take away the square and take the big red square away".split()]
    assert find(words, "take * away|off") == [(0, 1), (5, 10)]
    assert find(words, "take * square") == [(0, 3), (5, 9)]
    assert find([stem(w) for w in "take a b c d e away".split()], "take * away") == []  # a gap of five


@pytest.mark.parametrize("text, has_image, task, prompt", [
    # word families and inflections (sr)
    ("can you make this less fuzzy", True, "sr", None),
    ("increase the sharpness", True, "sr", None),
    ("make it look crisp", True, "sr", None),
    ("the photo is out of focus", True, "sr", None),
    # the image's size is sr, a shape's size an edit
    ("this is too small, make it 2 times larger", True, "sr", None),
    ("make the image 4x bigger", True, "sr", None),
    ("make the circle bigger", True, "edit", "make the circle bigger"),
    ("make this square larger", True, "edit", "make this square larger"),
    # removal in other words, rewritten to the toy model's "remove the X"
    ("can you take away the square?", True, "inpaint", "remove the square"),
    ("i want the circle gone", True, "inpaint", "remove the circle"),
    ("no more square please", True, "inpaint", "remove the square"),
    ("drop the circle from the picture", True, "inpaint", "remove the circle"),
    ("get the square out of there", True, "inpaint", "remove the square"),
    ("clear out the triangle", True, "inpaint", "remove the triangle"),
    ("I don't want the square, remove it", True, "inpaint", "remove the square"),
    ("the square shouldn't be there, remove it", True, "inpaint", "remove the square"),
    ("leave only the square, remove the rest", True, "inpaint", "remove the rest"),
    ("erase everything except the circle", True, "inpaint", "remove everything except the circle"),
    # a phrase inside a longer phrase of another task yields to it: the blur removed is sr
    ("get rid of the blur", True, "sr", None),
    ("remove the noise", True, "sr", None),
    # a new picture asked for while an image is shown; the description is what is drawn
    ("ok different one, a blue square on black", True, "t2i", "a blue square on black"),
    ("let's try a fresh start with a yellow triangle", True, "t2i", "a yellow triangle"),
    ("start over and draw a blue circle", True, "t2i", "a blue circle"),
    ("create a new image with a white square", True, "t2i", "a white square"),
    ("add another one", True, "edit", "add another one"),
    ("how about a green circle?", True, "t2i", "a green circle"),  # a description, once its framing is set aside
    # without an image, a task that needs none is preferred, and a description is drawn
    ("generate a high resolution picture of a circle", False, "t2i", "a circle"),
    ("a sharp red triangle on black", False, "t2i", "a sharp red triangle on black"),
])
def test_wording_the_rules_were_not_written_for(text, has_image, task, prompt):
    routed = route(text, has_image)
    assert (routed.task, routed.prompt) == (task, prompt), routed.reason


def test_a_typo_is_read_only_where_it_completes_a_phrase():
    assert route("sharpn the image", True).corrections == (("sharpn", "sharpen"),)  # "sharp" and "sharpen": one task
    routed = route("draw a fox", False)
    assert (routed.prompt, routed.corrections) == ("a fox", ())  # "fox" is one letter from sr's "fix"
    assert route("make the background darker", True).corrections == ()
    assert route("draw a tide", False).corrections == ()  # a letter changed in a short word: another word ("hide")
    assert route("erace the triangle", True).corrections == (("erace", "erase"),)  # ... in a longer one, a typo
    assert route("remove teh triangle", True).prompt == "remove the triangle"  # a swapped "the" is read anywhere


def test_routing_takes_well_under_a_millisecond_per_request():
    texts = [row["text"] for row in labelled() + labelled(FRESH)]
    route(texts[0], True)
    started = time.perf_counter()
    for text in texts:
        route(text, True)
    assert (time.perf_counter() - started) / len(texts) < 0.005  # ~0.3 ms here; the bound leaves room for load


@pytest.mark.parametrize("text", ["", "   ", None, 3])
def test_an_empty_request_is_refused(text):
    with pytest.raises(InputError, match="non-empty request"):
        route(text, False)


def test_an_unknown_slash_task_is_refused_naming_the_tasks():
    with pytest.raises(InputError, match=r"unknown task '/colourise'.*/t2i, /edit"):
        route("/colourise it", True)


@contextmanager
def users_task(phrases: tuple[str, ...]):
    """A user's own task `tint` (greyscale -> colour) with intent `phrases`, registered for one test."""
    task = Task(TaskSpec("tint", "greyscale -> colour", image_inputs=("image",)),
                intents=Intents(phrases, verb="drop"))
    plugin_registry.register(task)
    try:
        yield task
    finally:
        plugin_registry._PLUGINS.pop("tint", None)
        spec_registry.TASK_REGISTRY.items.pop("tint", None)


def test_a_users_task_is_asked_for_by_its_plugins_intents():
    with users_task(("colorize", "colourise", "add colour")):
        routed = route("please colourise this photo", True)
        assert (routed.task, routed.prompt, routed.needs_image) == ("tint", "this photo", True)
        assert route("make it blue", True).task == "edit"  # the built-ins keep their requests


def test_a_users_task_uses_alternatives_gaps_and_inflections():
    with users_task(("add * colour|color", "colourise|colorise|colourize|colorize")):
        assert route("add some colour to it", True).task == "tint"  # "add * colour|color"
        assert route("can it be colorized?", True).task == "tint"  # "colorize", inflected
        assert route("add a red circle", True).task == "edit"


@pytest.mark.parametrize("phrases, verb", [((), "keep"), (("Remove",), "keep"), (("*",), "keep"), (("x",), ""),
                                           (("* *",), "keep"), (("take|| away",), "keep"), (("|a",), "keep")])
def test_bad_intents_are_refused(phrases, verb):
    with pytest.raises(InputError):
        Intents(phrases, verb=verb)
