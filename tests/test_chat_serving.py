"""`mtu.chat.serving.answer` with the shipped toy-world model resident: one pipeline answers every task (switched per
request, no reload), each conversation keeps its own images, and every bad input becomes a clear reply after which
the same conversation still answers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mtu.chat import uploads
from mtu.chat.serving import ChatModel, Conversation, Settings, answer, load_pipeline

FAST = Settings(steps=2)


@pytest.fixture(scope="module")
def model():
    pipe, toy = load_pipeline("toyworld", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return ChatModel(pipe, "toyworld", toy=toy)


def png(path, image):
    image.save(path)
    return str(path)


def test_one_resident_pipeline_answers_every_task_and_follow_ups_act_on_the_last_image(model):
    unet = model.pipe.unet
    conversation = Conversation()
    for text, task in [("draw a red circle", "t2i"), ("make it blue", "edit"), ("upscale this", "sr"),
                       ("remove the circle", "inpaint")]:
        reply = answer(model, conversation, text, settings=FAST)
        assert (reply.task, reply.image.size) == (task, (32, 32)), reply.text
        assert f"Task **{task}**" in reply.text and "2 steps" in reply.text
    assert model.pipe.unet is unet and len(conversation.images) == 4
    assert model.toy


def scene(background: str, kind: str) -> Image.Image:
    from mtu.toyworld.scene import Scene, Shape, render

    return render(Scene(background, (Shape(kind, "red", "large", "center"),)), 32)


def test_conversations_keep_their_own_images(model, tmp_path):
    white, black = Conversation(), Conversation()
    answer(model, white, "", upload=png(tmp_path / "w.png", scene("white", "circle")))
    answer(model, black, "", upload=png(tmp_path / "b.png", scene("black", "square")))
    reply = answer(model, white, "upscale this", settings=Settings(steps=4))
    output = np.asarray(reply.image, dtype=float)
    distance = {name: np.abs(output - np.asarray(conversation.images[0], dtype=float)).mean()
                for name, conversation in (("white", white), ("black", black))}
    assert distance["white"] < distance["black"] / 2, distance  # its own image, not the other conversation's
    assert len(white.images) == 2 and len(black.images) == 1


def exif_rotated(path):
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    image.save(path, exif=exif)
    return str(path)


@pytest.mark.parametrize("make, said", [
    (lambda p: png(p, Image.new("RGBA", (50, 30), (255, 0, 0, 100))), "50x30 RGBA -> 32x32 RGB (centre crop, "
                                                                      "transparency dropped)"),
    (lambda p: png(p, Image.new("L", (32, 32), 90)), "32x32 L -> 32x32 RGB"),
    (lambda p: png(p, Image.fromarray(np.full((16, 16), 40000, np.uint16))), "16x16 I;16 -> 32x32 RGB "
                                                                            "(16-bit scaled to 8-bit)"),
    (lambda p: png(p, Image.new("P", (33, 33), 3)), "33x33 P -> 32x32 RGB"),
    (lambda p: exif_rotated(str(p).replace(".png", ".jpg")), "20x40 RGB -> 32x32 RGB (centre crop)"),
])
def test_odd_images_are_normalised_and_said(model, tmp_path, make, said):
    conversation = Conversation()
    reply = answer(model, conversation, "", upload=make(tmp_path / "odd.png"))
    assert said in reply.text
    assert conversation.last().size == (32, 32) and conversation.last().mode == "RGB"


def test_sixteen_bit_grey_is_scaled_not_clipped(model, tmp_path):
    conversation = Conversation()
    answer(model, conversation, "", upload=png(tmp_path / "g.png", Image.fromarray(np.full((8, 8), 32768, np.uint16))))
    assert 120 <= np.asarray(conversation.last()).mean() <= 136  # mid-grey, not white


@pytest.mark.parametrize("case, expected", [
    ("text file", "not an image this app reads"),
    ("empty file", "an empty file"),
    ("oversized", "the limit is 20 MB"),
    ("too many pixels", "the limit is 16,777,216 pixels"),
])
def test_bad_uploads_get_a_reply_and_the_conversation_still_answers(model, tmp_path, case, expected):
    path = tmp_path / "upload.png"
    if case == "text file":
        path.write_text("hello")
    elif case == "empty file":
        path.write_bytes(b"")
    elif case == "oversized":
        with open(path, "wb") as handle:
            handle.truncate(uploads.MAX_UPLOAD_BYTES + 1)
    else:
        Image.new("1", (5000, 4000)).save(path)  # a tiny file of 20 M pixels
    conversation = Conversation()
    reply = answer(model, conversation, "upscale this", upload=str(path), settings=FAST)
    assert expected in reply.text and reply.image is None and not conversation.images
    assert answer(model, conversation, "draw a red circle", settings=FAST).task == "t2i"


@pytest.mark.parametrize("text, expected", [
    ("", "Type a request"),
    ("x" * 10_000, "Your message has 10,000 characters; the limit is 2,000"),
    ("make it blue", "**edit** ('make it' asks for edit) needs an image"),
    ("fill the masked area with a circle", "this model has no 'inpaint_mask' task; it has: t2i, edit, sr, inpaint"),
    ("/colourise it", "unknown task '/colourise'"),
])
def test_bad_messages_get_a_clear_reply(model, text, expected):
    reply = answer(model, Conversation(), text, settings=FAST)
    assert expected in reply.text and reply.image is None


def test_settings_choose_the_task_and_bad_settings_are_a_reply(model):
    conversation = Conversation()
    reply = answer(model, conversation, "a red circle", settings=Settings(task="t2i", steps=2, seed=3))
    assert reply.task == "t2i" and "seed 3" in reply.text
    reply = answer(model, conversation, "make it blue", settings=Settings(steps=2, guidance_scale=float("nan")))
    assert "could not run with these settings" in reply.text and reply.image is None


def test_words_the_toy_model_never_saw_are_named(model):
    reply = answer(model, Conversation(), "draw a dog on a sofa", settings=FAST)
    assert "never saw the words 'dog', 'sofa'" in reply.text


def test_an_sdxl_model_answers_every_task_in_the_chat(tmp_path):
    """`mtu chat --model`: any trained MTU model, SDXL included (MTUStableDiffusionXLPipeline resident)."""
    from mtu.cli import main

    from .training_parts import tiny_sdxl_pipeline_folder

    base = tiny_sdxl_pipeline_folder(tmp_path)
    assert main(["upcycle", "--base", str(base), "--tasks", "t2i,edit,sr,inpaint", "--experts", "2",
                 "--out", str(tmp_path / "sdxl-adapter")]) == 0
    pipe, toy = load_pipeline(str(tmp_path / "sdxl-adapter"), device="cpu")
    assert type(pipe).__name__ == "MTUStableDiffusionXLPipeline" and not toy
    pipe.set_progress_bar_config(disable=True)
    sdxl = ChatModel(pipe, "tiny-sdxl")
    conversation = Conversation()
    for text, task in [("draw a red circle", "t2i"), ("make it blue", "edit"), ("upscale this", "sr"),
                       ("remove the circle", "inpaint")]:
        reply = answer(sdxl, conversation, text, settings=FAST)
        assert reply.task == task and reply.image is not None, reply.text
    assert len(conversation.images) == 4
