"""`mtu chat` end to end in a real headless Chromium (Debian's `chromium`, driven by Playwright with
`executable_path`; never `playwright install`): draw, edit the result, upload an image and remove an object, then a
bad upload, after which the app still answers. The page must load nothing from outside this machine. The screenshot
of the conversation goes to the test's temporary folder, or where `MTU_CHAT_SCREENSHOT` says: the README's
docs/figures/chat.png was taken with `MTU_CHAT_SCREENSHOT=docs/figures/chat.png pytest tests/test_chat_browser.py`
(a plain test run leaves the checkout untouched)."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed: run `make chromium` (Debian: apt-get install -y chromium "
                "chromium-driver) to run the browser test of `mtu chat`.", allow_module_level=True)
pytest.importorskip("gradio", reason="`mtu chat` needs gradio: pip install -e '.[test]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright: "
                               "pip install -e '.[test]'")

STEPS = "10"  # half the default: the test checks the conversation; the screenshot shows its images
TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    from mtu.chat.app import serve

    port = free_port()
    app = serve("toyworld", port=port, device="cpu", block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def bot_state(page) -> tuple[int, str]:
    """(images in the assistant's messages, the assistant's text)."""
    bot = page.locator("#conversation .bot-row")
    return page.locator("#conversation .bot-row img").count(), "\n".join(bot.all_inner_texts())


def ask(page, text: str, expect: str, image: bool = True, upload: Path | None = None) -> str:
    """Sends `text` (with `upload` attached); waits for a reply holding `expect` (and a new image); returns it."""
    images, before = bot_state(page)
    if upload is not None:
        page.locator("#request input[type=file]").set_input_files(str(upload))
        page.wait_for_selector("#request .thumbnail-item, #request .upload-file, #request img", timeout=30_000)
    box = page.locator("#request textarea")
    box.fill(text)
    box.press("Enter")
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        count, now = bot_state(page)
        new = now[len(before):] if now.startswith(before) else now
        if expect in new and "Working on it" not in new and (count > images or not image):
            return new
        time.sleep(0.3)
    raise AssertionError(f"no reply with {expect!r} to {text!r} within {TIMEOUT_S} s; the page shows:\n{now}")


def scene_png(path: Path) -> Path:
    from mtu.toyworld.scene import Scene, Shape, render

    scene = Scene("white", (Shape("circle", "red", "large", "top left"), Shape("square", "blue", "large", "center")))
    render(scene, 32).resize((96, 96)).save(path)
    return path


def test_draw_edit_remove_and_a_bad_upload_in_chromium(app_url, tmp_path):
    requests = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1400})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(app_url)
            page.locator("#settings").get_by_text("Settings", exact=True).click()
            page.locator("#steps input").fill(STEPS)

            drawn = ask(page, "please draw a red circle on a black background", "Task t2i")
            assert "a red circle on a black background" in drawn and f"{STEPS} steps" in drawn
            assert "Task edit" in ask(page, "now make the circle blue", "Task edit")
            removed = ask(page, "remove the square", "Task inpaint", upload=scene_png(tmp_path / "my scene.png"))
            assert "Got your image (96x96 RGB -> 32x32 RGB)" in removed
            bad = tmp_path / "notes.png"  # an image's name, a text's bytes
            bad.write_text("not an image")
            refused = ask(page, "upscale this", "I could not use that file", image=False, upload=bad)
            assert "not an image" in refused
            assert "Task sr" in ask(page, "upscale this", "Task sr")  # the app still answers
            # The whole conversation, not the chat box's scrolled window
            page.add_style_tag(content="#conversation, #conversation * { max-height: none !important; } "
                                       "#conversation, #conversation div { height: auto !important; "
                                       "overflow: visible !important; }")
            screenshot = Path(os.environ.get("MTU_CHAT_SCREENSHOT") or tmp_path / "chat.png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            staging = screenshot.with_name(".chat.png.tmp")
            page.locator("#conversation").screenshot(path=str(staging), type="png")
            os.replace(staging, screenshot)
            assert screenshot.stat().st_size > 10_000
        finally:
            browser.close()
    outside = sorted({url for url in requests if not url.startswith(app_url) and not url.startswith("data:")
                      and not url.startswith("blob:")})
    assert not outside, f"the page loaded from outside this machine: {outside}"
