"""Adapter-only save/load: `mtu_config.json` + `mtu_model.safetensors`, tied to the base by a fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .. import __version__
from ..shipped import resolve, short_names
from .bases import load_base_unet
from .config import MTUConfig
from .tasks import TaskSpec, available_tasks, get_task, register_task

CONFIG_NAME = "mtu_config.json"
WEIGHTS_NAME = "mtu_model.safetensors"
FORMAT = "mtu-adapter"
FORMAT_VERSION = 1
# How the trainer encoded a dropped text (classifier-free guidance dropout), recorded as the adapter's
# "unconditional_text" so that its pipeline samples the unconditional branch the same way: "zeros" (zero prompt and
# pooled embeddings, SDXL's `force_zeros_for_empty_prompt`) or "empty_prompt" (the encoded "").
UNCONDITIONAL_TEXT = ("zeros", "empty_prompt")


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes: identifies the exact base weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


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
    import shutil

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
    if state_dict is not None:
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
                            metadata={"format": "pt", "mtu_version": __version__})
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mtu_version": __version__,
        "config": model.mtu_config.to_dict(),
        "tasks": {spec.name: spec.to_dict() for spec in model.task_specs},
        "base": model.base_info,
        "dtype": dtype,
    }
    unconditional = getattr(model, "unconditional_text", None)
    if unconditional is not None:
        record["unconditional_text"] = unconditional
    atomic_write_text(directory / CONFIG_NAME, json.dumps(record, indent=2) + "\n")


def adapter_directory(name_or_path) -> Path:
    """The adapter folder `name_or_path` names: a folder, or the short name of a shipped adapter (`mtu.shipped`)."""
    return Path(resolve(name_or_path, "adapter", "adapter"))


def read_adapter_config(directory) -> dict:
    """The adapter's JSON record, validated; registers tasks the adapter defines that this process lacks.

    `directory` is an adapter folder or a shipped adapter's short name (`adapter_directory`).
    """
    path = adapter_directory(directory) / CONFIG_NAME
    if not path.is_file():
        hint = "" if path.parent.exists() else f" (shipped adapters: {', '.join(short_names('adapter'))})"
        raise FileNotFoundError(f"no MTU adapter in {str(directory)!r}: {CONFIG_NAME} is missing{hint}.")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the adapter is corrupt.") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path} is not an MTU adapter config (expected \"format\": \"{FORMAT}\").")
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {record.get('format_version')!r}; this mtu reads "
                         f"{FORMAT_VERSION}.")
    unconditional = record.get("unconditional_text")
    if unconditional is not None and unconditional not in UNCONDITIONAL_TEXT:
        raise ValueError(f"{path} has \"unconditional_text\" {unconditional!r}; expected one of "
                         f"{UNCONDITIONAL_TEXT}.")
    for name, data in record.get("tasks", {}).items():
        spec = TaskSpec.from_dict(data)
        if name not in available_tasks():
            register_task(spec)
        elif get_task(name) != spec:
            raise ValueError(f"the adapter defines task {name!r} as {spec}, but this process has it registered as "
                             f"{get_task(name)}.")
    record["config"] = MTUConfig.from_dict(record["config"])
    return record


def read_adapter_tensors(directory) -> dict[str, torch.Tensor]:
    """All tensors of the adapter file; a truncated or corrupt file raises ValueError naming it."""
    path = adapter_directory(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no MTU adapter weights in {str(directory)!r}: {WEIGHTS_NAME} is missing.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for bad headers and short files
        raise ValueError(f"{path} is corrupt or truncated and cannot be read ({error}).") from error


def _check_base(record: dict, unet, allow_base_mismatch: bool) -> None:
    from .model import base_unet_config

    expected, found = record["base"]["unet_config"], base_unet_config(unet)
    differing = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
    hint = " Pass allow_base_mismatch=True (CLI: --allow-base-mismatch) to load it anyway."
    if differing and not allow_base_mismatch:
        details = "; ".join(f"{k}: adapter {expected.get(k)!r} vs base {found.get(k)!r}" for k in differing[:4])
        raise ValueError(f"the adapter was made for another base architecture ({details}).{hint}")
    fingerprint = record["base"].get("fingerprint")
    if fingerprint and not differing and not allow_base_mismatch:
        actual = weights_fingerprint(unet)
        if actual != fingerprint:
            raise ValueError(f"the base weights differ from the ones the adapter was made from (fingerprint "
                             f"{actual[:19]}... vs recorded {fingerprint[:19]}...; base "
                             f"{record['base'].get('name_or_path')!r}).{hint}")


def load_mtu(directory, base=None, *, allow_base_mismatch: bool = False, torch_dtype: torch.dtype | None = None):
    """Restores an `MTUModel` saved with `save_pretrained`.

    Args:
        directory: The adapter folder, or a shipped adapter's short name ("toyworld", see `mtu.shipped`).
        base: The base UNet (`UNet2DConditionModel`, not upcycled), or where to load it from (see
            `load_base_unet`); None uses the path or hub id recorded in the adapter.
        allow_base_mismatch: Load even if the base's architecture or weights differ from the recorded ones.
        torch_dtype: dtype of the returned model. The base is loaded and fingerprint-checked in its stored
            dtype, then cast.
    """
    from diffusers import UNet2DConditionModel

    from .model import upcycle

    directory = adapter_directory(directory)
    record = read_adapter_config(directory)
    tensors = read_adapter_tensors(directory)  # read first: a corrupt file fails before the base is loaded
    if base is None:
        base = record["base"].get("name_or_path")
        if not base:
            raise ValueError("the adapter records no base location; pass `base=`.")
    if isinstance(base, (str, os.PathLike)):
        base = load_base_unet(str(base))  # stored dtype: the fingerprint was taken of those bytes
    if not isinstance(base, UNet2DConditionModel):
        raise TypeError(f"`base` must be a UNet2DConditionModel or a path/hub id, got {type(base).__name__}.")
    _check_base(record, base, allow_base_mismatch)
    model = upcycle(base, record["config"], fingerprint=record["base"].get("fingerprint") or False,
                    base_name_or_path=record["base"].get("name_or_path"))
    load_mtu_tensors(model, tensors, directory / WEIGHTS_NAME)
    if record.get("unconditional_text") is not None:  # how its training encoded dropped text (`save_adapter`)
        model.unconditional_text = record["unconditional_text"]
    return model.to(torch_dtype) if torch_dtype is not None else model


def set_recorded_base(directory, name_or_path: str, base_unet) -> Path:
    """Rewrites where the adapter in `directory` says its base is (e.g. to a shipped base's short name), atomically.

    Args:
        directory: The adapter folder.
        name_or_path: The new base location: a folder, hub id or short name.
        base_unet: The base UNet that `name_or_path` loads; it must be the one the adapter was made from (same
            architecture and, if recorded, the same weights fingerprint), else ValueError and nothing is written.
    Returns:
        The adapter folder.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"`name_or_path` must be a non-empty string, got {name_or_path!r}.")
    directory = adapter_directory(directory)
    _check_base(read_adapter_config(directory), base_unet, allow_base_mismatch=False)
    path = directory / CONFIG_NAME
    raw = json.loads(path.read_text())  # as stored: read_adapter_config returns the config as an MTUConfig
    raw["base"]["name_or_path"] = name_or_path
    atomic_write_text(path, json.dumps(raw, indent=2) + "\n")
    return directory


@torch.no_grad()
def load_mtu_tensors(model, tensors: dict[str, torch.Tensor], source) -> None:
    """Copies adapter tensors into `model`, requiring exactly the model's MTU tensor names and shapes."""
    params = dict(model.mtu_named_parameters())
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(f"{source} does not match this MTU model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}.")
    for name, param in params.items():
        if tensors[name].shape != param.shape:
            raise ValueError(f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)}, the model expects "
                             f"{tuple(param.shape)}.")
        param.copy_(tensors[name])
