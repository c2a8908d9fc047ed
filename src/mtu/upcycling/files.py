"""Files on disk: writing them so they are never seen half-written, writing an MTU adapter folder, and knowing a
pickle when one is offered as weights.

An adapter folder holds `mtu_config.json` (the format record: config, tasks, the base's identity) and
`mtu_model.safetensors` (the MTU-owned tensors). Reading one back, with every check, is `serialization`'s job;
this module sits below the model so that `MTUModel.save_pretrained` writes without importing the loader.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import InputError
from .tasks import task_origin
from .text_encoders import TEXT_ENCODERS_DIR, split_state_dict

CONFIG_NAME = "mtu_config.json"
WEIGHTS_NAME = "mtu_model.safetensors"
FORMAT = "mtu-adapter"
FORMAT_VERSION = 1
# How the trainer encoded a dropped text (classifier-free guidance dropout), recorded as the adapter's
# "unconditional_text" so that its pipeline samples the unconditional branch the same way: "zeros" (zero prompt and
# pooled embeddings, SDXL's `force_zeros_for_empty_prompt`) or "empty_prompt" (the encoded "").
UNCONDITIONAL_TEXT = ("zeros", "empty_prompt")
# The installed package's version, recorded in every adapter (read from the distribution's metadata, not from
# `mtu.__version__`: `mtu/__init__` imports this layer, so importing it back would be a cycle).
MTU_VERSION = version("mtu-diffusion")
# Files that torch.save / pickle write: never opened (unpickling runs arbitrary code), refused by name or by their
# first bytes (pickle protocols 2-5; torch.save's zip archive).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


def pickle_refusal(path: Path) -> InputError:
    """The error for a pickle offered where safetensors weights are expected; the file is never opened."""
    return InputError(f"{path} is a pickle file (torch.save); mtu reads weights only from safetensors and never "
                      f"unpickles a file. Convert it where you trust it: safetensors.torch.save_file(torch.load(...)).")


def _atomic_path(path: Path):
    """A staging file beside `path`; the caller renames it into place once it is complete."""
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(staging)


def atomic_write_text(path: Path, text: str) -> None:
    staging = _atomic_path(path)
    try:
        with open(staging, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    staging = _atomic_path(path)
    try:
        save_file(tensors, str(staging), metadata=metadata)
        with open(staging, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def atomic_save_directory(write, directory) -> None:
    """Runs `write(staging_folder)`, then renames the finished folder to `directory` (replacing an old one)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        write(staging)
        if directory.exists():
            retired = staging.with_suffix(".old")
            os.replace(directory, retired)
            os.replace(staging, directory)
            shutil.rmtree(retired)
        else:
            os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_adapter(model, save_directory, state_dict: dict | None = None) -> None:
    """Writes the MTU-owned tensors (or `state_dict`, which must hold exactly those names) and the config (with
    the base's identity) into `save_directory`.

    A model that says how its training encoded dropped text (`model.unconditional_text`, set by the trainer and by
    `load_mtu`; see `UNCONDITIONAL_TEXT`) has it recorded; the SDXL pipeline samples its negative branch that way.
    """
    directory = Path(save_directory)
    tensors = {name: param.detach().contiguous() for name, param in model.mtu_named_parameters()}
    encoders = dict(getattr(model, "text_encoders", {}).items())
    encoder_weights = None
    if state_dict is not None:
        state_dict, encoder_weights = split_state_dict(state_dict)
        if encoder_weights.keys() - encoders.keys():
            extra = sorted(encoder_weights.keys() - encoders.keys())
            raise ValueError(f"`state_dict` holds text encoders of tasks {extra}, which the model does not have.")
        if state_dict.keys() != tensors.keys():
            missing, extra = sorted(tensors.keys() - state_dict.keys()), sorted(state_dict.keys() - tensors.keys())
            raise ValueError(f"`state_dict` must hold exactly the MTU tensors; missing {missing[:5]}, "
                             f"unexpected {extra[:5]}.")
        tensors = {name: state_dict[name].detach().contiguous() for name in tensors}
    directory.mkdir(parents=True, exist_ok=True)
    if any(t.is_meta for t in tensors.values()):
        raise ValueError("cannot save an MTU model on the meta device; it has shapes but no weights.")
    dtype = str(model.task_embeddings.dtype).removeprefix("torch.")
    atomic_save_safetensors({k: v.cpu() for k, v in tensors.items()}, directory / WEIGHTS_NAME,
                            metadata={"format": "pt", "mtu_version": MTU_VERSION})
    save_task_text_encoders(encoders, directory, encoder_weights)
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mtu_version": MTU_VERSION,
        "config": model.mtu_config.to_dict(),
        "tasks": {spec.name: spec.to_dict() for spec in model.task_specs},
        "base": model.base_info,
        "dtype": dtype,
    }
    plugins = {spec.name: task_origin(spec.name) for spec in model.task_specs if task_origin(spec.name)}
    if plugins:  # task -> its plug-in module, named when a process loads the adapter without it
        record["plugins"] = plugins
    unconditional = getattr(model, "unconditional_text", None)
    if unconditional is not None:
        record["unconditional_text"] = unconditional
    if encoders:  # each in text_encoders/<task>/ (`mtu.upcycling.text_encoders`)
        record["task_text_encoders"] = list(encoders)
    atomic_write_text(directory / CONFIG_NAME, json.dumps(record, indent=2) + "\n")


def save_task_text_encoders(encoders, directory, state_dicts: dict[str, dict] | None = None) -> None:
    """Writes each task's encoder into `directory/text_encoders/<task>/` as a stock transformers folder (staged,
    then renamed into place). `state_dicts` ({task: {name: tensor}}) replaces their weights (EMA, gathered)."""
    for task, encoder in encoders.items():
        weights = None
        if state_dicts is not None:
            given = state_dicts.get(task, {})
            missing = sorted(name for name, _ in encoder.named_parameters() if name not in given)
            if missing:
                raise ValueError(f"`state_dict` lacks text encoder {task!r}'s {missing[:3]}.")
            weights = {name: given.get(name, tensor).detach().cpu().contiguous()
                       for name, tensor in encoder.state_dict().items()}

        def write(folder: Path, encoder=encoder, weights=weights) -> None:
            encoder.save_pretrained(folder, safe_serialization=True, state_dict=weights)

        atomic_save_directory(write, Path(directory) / TEXT_ENCODERS_DIR / task)
