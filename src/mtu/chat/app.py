"""The Gradio app of `mtu chat`: a conversation, an attachment button, settings, and Gradio's queue.

Gradio is imported here only, after `GRADIO_ANALYTICS_ENABLED=False` (no usage reports, no version check) and
`GRADIO_TEMP_DIR` (uploads and served images stay in the app's own temporary folder, removed when it stops) are set.
Its front end is bundled in the wheel and its default theme uses bundled fonts, so the page loads offline.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path

from ..errors import InputError, MissingExtraError
from .serving import AUTO, EXAMPLES, ChatModel, Conversation, Settings, answer
from .uploads import MAX_UPLOAD_BYTES, for_display

INSTALL_HINT = "pip install 'mtu-diffusion[chat]' (or pip install gradio)"
CONCURRENCY = 4  # requests Gradio's queue runs at once; sampling itself takes turns (`ChatModel.run`'s lock)
MAX_QUEUE = 100
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def import_gradio(temp_dir: Path):
    """gradio, imported with analytics off and its files in `temp_dir`."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)
    try:
        import gradio
    except ImportError as error:
        raise MissingExtraError(f"`mtu chat` needs gradio, which is not installed ({error.name}): "
                                f"{INSTALL_HINT}") from None
    return gradio


def check_address(host: str, port: int) -> None:
    """Raises `InputError` for a port out of range or in use, or a host this machine cannot bind."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError(f"must be an integer in [1, 65535], got {port!r}.", field="--port")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise InputError(f"must be an IP address such as 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                             f"interface), got {host!r}.", field="--host") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise InputError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port or "
                             f"--host.", field="--port") from None


def _settings(task, steps, guidance, image_guidance, seed) -> Settings:
    """The settings panel's values; an empty field (which Gradio sends as None or 0) means the task's default."""
    number = (lambda value: None if value in (None, "", 0) else float(value))
    return Settings(task=task or AUTO, steps=None if number(steps) is None else int(number(steps)),
                    guidance_scale=number(guidance), image_guidance_scale=number(image_guidance),
                    seed=int(seed or 0))


def _shown(image, folder: Path, conversation: Conversation) -> str:
    """Writes the image scaled up for the page under a name of our own; returns its path."""
    target = folder / conversation.id
    target.mkdir(exist_ok=True)
    path = target / f"{uuid.uuid4().hex}.png"
    for_display(image).save(path)
    return str(path)


def build_app(model: ChatModel, temp_dir: Path):
    """The `gr.Blocks` app serving `model`; uploads and shown images live under `temp_dir`."""
    gr = import_gradio(temp_dir)
    shown_dir = temp_dir / "shown"
    shown_dir.mkdir(exist_ok=True)
    has_mask_task = any("mask" in spec.image_inputs for spec in model.pipe.unet.task_specs)

    def respond(message, history, conversation, task, steps, guidance, image_guidance, seed, mask,
                progress=gr.Progress(track_tqdm=True)):
        conversation = conversation or Conversation()
        text = (message or {}).get("text") or ""
        files = (message or {}).get("files") or []
        upload = files[0] if files else None
        upload = upload.get("path") if isinstance(upload, dict) else upload
        history = list(history or [])
        if text:
            history.append({"role": "user", "content": text[:300] + ("..." if len(text) > 300 else "")})
        yield {"text": "", "files": []}, history + [{"role": "assistant", "content": "Working on it..."}], \
            conversation
        reply = answer(model, conversation, text, upload, _settings(task, steps, guidance, image_guidance, seed),
                       mask=mask)
        if reply.received is not None:  # the upload as the model sees it, under a name of our own
            history.append({"role": "user", "content": {"path": _shown(reply.received, shown_dir, conversation)}})
        history.append({"role": "assistant", "content": reply.text})
        if reply.image is not None:
            history.append({"role": "assistant", "content": {"path": _shown(reply.image, shown_dir, conversation)}})
        yield {"text": "", "files": []}, history, conversation

    with gr.Blocks(title="mtu chat") as app:
        gr.Markdown(f"## mtu chat: one upcycled model for every request\nModel **{model.name}**, tasks "
                    f"{', '.join(model.tasks)}. Ask e.g. {EXAMPLES}; attach an image with the clip. Follow-ups act "
                    f"on the last image. Start with `/task` (e.g. `/sr`) to choose the task yourself.")
        chatbot = gr.Chatbot(label="conversation", height=520, elem_id="conversation")
        box = gr.MultimodalTextbox(placeholder="draw a red circle", file_count="single", show_label=False,
                                   max_plain_text_length=20_000, elem_id="request")
        with gr.Accordion("Settings", open=False, elem_id="settings"):
            with gr.Row():
                task = gr.Dropdown([AUTO, *model.tasks], value=AUTO, label="task")
                steps = gr.Number(None, label="steps (empty or 0: the task's)", precision=0, elem_id="steps")
                guidance = gr.Number(None, label="guidance (empty or 0: the task's)")
                image_guidance = gr.Number(None, label="image guidance (empty or 0: the task's)")
                seed = gr.Number(0, label="seed", precision=0)
            mask = gr.Image(type="filepath", label="mask (white = fill)", visible=has_mask_task)
        conversation = gr.State(None)
        box.submit(respond, [box, chatbot, conversation, task, steps, guidance, image_guidance, seed, mask],
                   [box, chatbot, conversation], api_name="chat")
    return app


def serve(model_name="toyworld", base=None, host: str = "127.0.0.1", port: int = 7860, device=None, dtype=None,
          block: bool = True):
    """Loads the model, builds the app and starts it on `host:port`; returns the app (running, when not `block`)."""
    from .serving import check_model, load_pipeline

    check_address(host, port)
    checked = check_model(model_name, base, device, dtype)  # every flag, before gradio or any weights load
    temp_dir = Path(tempfile.mkdtemp(prefix="mtu-chat-"))
    atexit.register(shutil.rmtree, temp_dir, ignore_errors=True)
    import_gradio(temp_dir)  # a missing gradio is said before the model loads
    pipe, toy = load_pipeline(model_name, base, checked=checked)
    model = ChatModel(pipe, str(model_name), toy=toy)
    app = build_app(model, temp_dir)
    where = "this machine only" if host in LOCAL_HOSTS else "every machine that can reach this one"
    print(f"mtu chat: serving {model.name} (tasks {', '.join(model.tasks)}) on http://{host}:{port} ({where}; "
          f"--host changes it); uploads stay in {temp_dir}", file=sys.stderr)
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    app.launch(server_name=host, server_port=port, max_file_size=2 * MAX_UPLOAD_BYTES, quiet=True,
               prevent_thread_lock=not block, show_error=False)
    return app


def add_chat_arguments(parser):
    """The `mtu chat` options."""
    parser.add_argument("--model", default="toyworld", help="what `mtu generate --model` takes (default: the "
                        "shipped toy-world model); any trained MTU model, SD 1.x or SDXL")
    parser.add_argument("--base", default=None, help="base pipeline folder or hub id (default: the recorded one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                        "machine only; 0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32 (default), float16 or bfloat16")
    return parser


def run_chat(args) -> int:
    """`mtu chat`: serves until interrupted."""
    serve(args.model, args.base, args.host, args.port, args.device, args.dtype, block=True)
    return 0
