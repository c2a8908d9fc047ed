"""The chat's core, without any web framework: one resident model, per-conversation image stores, `answer`.

`ChatModel` holds one `MTUPipeline` (SD 1.x) or `MTUStableDiffusionXLPipeline` in memory; every request names its
task (`pipe(task, ...)`, the task switched per call, no weights reloaded). Sampling is serialised by a lock, since a
pipeline's scheduler holds the state of the call running; the web queue (`app.py`) lets several conversations wait
their turn. Each `Conversation` keeps its own images: a follow-up acts on the last image of its own conversation.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import InputError
from .routing import Route, route
from .uploads import describe, fit, read_upload

MAX_MESSAGE_CHARS = 2000
AUTO = "auto"
EXAMPLES = "'draw a red circle', 'make it blue', 'upscale this', 'remove the square'"


@dataclass
class Settings:
    """What the user may override (None: the task's default, `pipe.task_defaults(task)`)."""

    task: str = AUTO
    steps: int | None = None
    guidance_scale: float | None = None
    image_guidance_scale: float | None = None
    seed: int = 0


@dataclass
class Reply:
    """One answer: its text (markdown), its image (at the model's size) or None, the task run, its times, and the
    upload as the model sees it (None without a usable upload)."""

    text: str
    image: Image.Image | None = None
    task: str | None = None
    waited_s: float = 0.0
    sampled_s: float = 0.0
    received: Image.Image | None = None


@dataclass
class Conversation:
    """One conversation's images, kept for it only (the last one is what follow-ups act on)."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    images: list = field(default_factory=list)
    mask: Image.Image | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, image: Image.Image) -> None:
        with self.lock:
            self.images.append(image)

    def last(self) -> Image.Image | None:
        with self.lock:
            return self.images[-1] if self.images else None


def check_model(model, base=None, device: str | None = None, dtype: str | None = None):
    """(model source, torch device, torch dtype) of what `mtu chat` was asked to serve, checked without loading any
    weights; raises `InputError` naming the flag."""
    from ..pipelines.generate import check_device, check_dtype, read_model_source

    torch_dtype = check_dtype(dtype, field="--dtype")
    return read_model_source(model, base), check_device(device), torch_dtype


def load_pipeline(model, base=None, device: str | None = None, dtype: str | None = None, checked=None):
    """(pipeline, runs on the toy-world base) of `model` (what `mtu generate --model` takes: a shipped name, an
    adapter, pipeline, run or checkpoint folder) on `device`; SD 1.x or SDXL by the base's UNet. `checked`: what
    `check_model` returned for these arguments."""
    from ..pipelines.generate import load_pipeline as pipeline_of
    from ..shipped import shipped_base

    source, torch_device, torch_dtype = checked or check_model(model, base, device, dtype)
    pipe = pipeline_of(source, torch_dtype=torch_dtype, device=torch_device)
    toy = Path(str(source.base)).expanduser().resolve() == shipped_base().resolve()
    return pipe, toy


class ChatModel:
    """One resident pipeline answering every task; `run` samples under a lock.

    Args:
        pipe: An `MTUPipeline` or `MTUStableDiffusionXLPipeline`.
        name: How the model is named in replies.
        toy: Whether it is the toy-world model (replies then name prompt words it never saw).
    """

    def __init__(self, pipe, name: str, toy: bool = False):
        self.pipe, self.name, self.toy = pipe, name, toy
        self.tasks = tuple(pipe.unet.task_names)
        self.size = pipe.unet.unet.config.sample_size * pipe.vae_scale_factor
        self._lock = threading.Lock()

    def input_size(self, task: str) -> int:
        """The size an input image is brought to: the model's size, over `sr_scale` for super-resolution."""
        return self.size // (self.pipe.task_defaults(task).sr_scale or 1)

    def run(self, task: str, **kwargs) -> tuple[Image.Image, float, float]:
        """(image, seconds waited for the model, seconds sampling) of one call `pipe(task, **kwargs)`."""
        import torch

        asked = time.perf_counter()
        with self._lock:
            started = time.perf_counter()
            seed = kwargs.pop("seed", 0)
            output = self.pipe(task, generator=torch.Generator("cpu").manual_seed(seed), **kwargs)
            return output.images[0], started - asked, time.perf_counter() - started


def _choose(text: str, has_image: bool, settings: Settings) -> Route:
    """The routed task, or the one the user chose in the settings (the prompt then passes as typed)."""
    routed = route(text, has_image)
    if settings.task in (AUTO, None, "", routed.task):
        return routed
    from ..upcycling.tasks import get_task

    spec = get_task(settings.task)
    return Route(settings.task, text.strip() if spec.uses_prompt else None, bool(spec.image_inputs),
                 "you chose it in the settings")


def _settings_line(model: ChatModel, task: str, prompt: str | None, settings: Settings) -> tuple[str, dict]:
    """The call's keyword arguments and how the reply shows them."""
    defaults = model.pipe.task_defaults(task)
    steps = settings.steps or defaults.num_inference_steps
    guidance = settings.guidance_scale if settings.guidance_scale is not None else defaults.guidance_scale
    image_guidance = settings.image_guidance_scale if settings.image_guidance_scale is not None \
        else defaults.image_guidance_scale
    kwargs = {"num_inference_steps": steps, "seed": settings.seed}
    shown = [f"{steps} steps"]
    if defaults.guidance != "none":
        kwargs["guidance_scale"] = guidance
        shown.append(f"guidance {guidance:g}")
        if defaults.guidance == "dual":
            kwargs["image_guidance_scale"] = image_guidance
            shown.append(f"image guidance {image_guidance:g}")
    shown.append(f"seed {settings.seed}")
    return ", ".join(shown), kwargs


def _unknown_note(model: ChatModel, prompt: str | None) -> str:
    if not model.toy or not prompt:
        return ""
    from .vocabulary import unknown_words

    words = unknown_words(prompt)
    if not words:
        return ""
    return (f"\n\nNote: the toy-world model never saw the word{'s' if len(words) > 1 else ''} "
            f"{', '.join(repr(w) for w in words)}; it knows circles, squares and triangles in 7 colours, 2 sizes "
            f"and 9 positions on a black, white or gray background.")


def _check_message(text: str, has_upload: bool) -> str | None:
    """A reply for a message that cannot be answered as it is, else None."""
    if len(text) > MAX_MESSAGE_CHARS:
        return (f"Your message has {len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}. "
                f"Ask in a sentence, e.g. {EXAMPLES}.")
    if not text.strip() and not has_upload:
        return f"Type a request, e.g. {EXAMPLES}."
    return None


def answer(model: ChatModel, conversation: Conversation, text: str | None, upload: str | None = None,
           settings: Settings | None = None, mask: str | None = None) -> Reply:
    """Answers one chat message; every problem with the input becomes a reply, never an exception.

    Args:
        model: The resident model.
        conversation: The conversation the message belongs to (its images).
        text: The message.
        upload: Path of an attached file (stored by the web framework in the app's temporary folder).
        settings: Overrides of the task and its main settings.
        mask: Path of an uploaded mask (white = fill) for mask tasks.
    """
    settings = settings or Settings()
    text = text or ""
    problem = _check_message(text, upload is not None)
    if problem:
        return Reply(problem)
    notes, fitted = "", None
    if upload is not None:
        try:
            received = read_upload(upload)
        except InputError as error:
            return Reply(f"I could not use that file: {str(error).rstrip('.')}. Attach a PNG or JPEG image.")
        fitted = fit(received.image, model.size)
        conversation.add(fitted)
        notes = f"Got your image ({describe(received, model.size)}). "
        if not text.strip():
            return Reply(notes + f"What should I do with it? e.g. {EXAMPLES}.", received=fitted)
    if mask is not None:
        try:
            conversation.mask = fit(read_upload(mask, mode="L").image, model.size)
        except InputError as error:
            return Reply(f"I could not use that mask: {error}")
    reply = _run(model, conversation, text, settings, notes)
    reply.received = fitted
    return reply


def _run(model: ChatModel, conversation: Conversation, text: str, settings: Settings, notes: str) -> Reply:
    image = conversation.last()
    try:
        chosen = _choose(text, image is not None, settings)
    except InputError as error:
        return Reply(notes + f"{error.message}")
    if chosen.task not in model.tasks:
        return Reply(notes + f"You asked for **{chosen.task}** ({chosen.reason}), but this model has no "
                     f"{chosen.task!r} task; it has: {', '.join(model.tasks)}.", task=chosen.task)
    if chosen.needs_image and image is None:
        return Reply(notes + f"**{chosen.task}** ({chosen.reason}) needs an image: attach one, or ask me to draw "
                     f"one first (e.g. 'draw a red circle').", task=chosen.task)
    call = {"prompt": chosen.prompt}
    if chosen.needs_image:
        call["image"] = fit(image, model.input_size(chosen.task))
        if "mask" in model.pipe.unet.task_specs[model.pipe.unet.task_index(chosen.task)].image_inputs:
            if conversation.mask is None:
                return Reply(notes + f"**{chosen.task}** needs a mask: upload one under Settings (white = fill).",
                             task=chosen.task)
            call["mask_image"] = conversation.mask
    shown, kwargs = _settings_line(model, chosen.task, chosen.prompt, settings)
    try:
        result, waited, sampled = model.run(chosen.task, **call, **kwargs)
    except InputError as error:  # e.g. a guidance scale the task refuses
        return Reply(notes + f"**{chosen.task}** could not run with these settings: {error}", task=chosen.task)
    conversation.add(result)
    prompt = f' "{chosen.prompt}"' if chosen.prompt else ""
    typos = "".join(f" (read {typed!r} as {word!r})" for typed, word in chosen.corrections)
    text = (f"{notes}Task **{chosen.task}**{prompt}: {chosen.reason}{typos}. Settings: {shown}. "
            f"{result.width}x{result.height}, waited {waited:.1f} s, sampled in {sampled:.1f} s."
            f"{_unknown_note(model, chosen.prompt)}")
    return Reply(text, result, chosen.task, waited, sampled)
