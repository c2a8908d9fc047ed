"""Adapter-only save/load: `mtu_config.json` + `mtu_model.safetensors`, tied to the base by a fingerprint.

Writing lives in `files` (below the model); this module reads an adapter back and checks everything it can before
the base is loaded: the record, tensor names and shapes against what the config makes (on the meta device), finite
values, and the base's identity. Every refusal is an `InputError` naming the file. Weights are read from
safetensors only; a pickle offered in their place is refused without being unpickled.
"""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors import SafetensorError, safe_open

from ..errors import InputError
from ..shipped import resolve, short_names
from .bases import base_unet_config, find_recorded_base, fingerprint_matches, load_base_unet, looks_like_hub_id
from .config import MTUConfig
from .files import (  # noqa: F401  (re-exported: the adapter format's names and writers are imported from here)
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    PICKLE_MAGIC,
    PICKLE_SUFFIXES,
    UNCONDITIONAL_TEXT,
    WEIGHTS_NAME,
    atomic_save_directory,
    atomic_save_safetensors,
    atomic_write_text,
    pickle_refusal,
    save_adapter,
)
from .model import upcycle
from .tasks import TaskSpec, available_tasks, get_task, register_task
from .text_encoders import check_encoder_tasks, text_encoder_folder

@contextmanager
def open_safetensors(path, what: str):
    """`safe_open` of the safetensors file `path` ("what" says what it holds, for errors); refuses a missing,
    truncated or corrupt file, and a pickle offered in its place (by name or by its first bytes), naming it."""
    path = Path(path)
    if not path.is_file():
        pickles = sorted(p.name for p in path.parent.glob("*") if p.suffix in PICKLE_SUFFIXES) \
            if path.parent.is_dir() else []
        if pickles:
            raise pickle_refusal(path.parent / pickles[0])
        raise FileNotFoundError(f"no {what} in {str(path.parent)!r}: {path.name} is missing.")
    with open(path, "rb") as handle:
        if handle.read(4).startswith(PICKLE_MAGIC):
            raise pickle_refusal(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            yield handle
    except SafetensorError as error:
        raise InputError(f"{path} is corrupt or truncated and cannot be read ({error}).") from error


def read_safetensors(path, what: str) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file `path`, checked as `open_safetensors` does."""
    with open_safetensors(path, what) as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}


def check_finite(tensors: dict[str, torch.Tensor], source) -> None:
    """Refuses tensors holding NaN or infinity, naming the first such tensor of `source`."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise InputError(f"{source}: tensor {name!r} holds {bad} NaN or infinite value(s) of {tensor.numel()}; "
                             f"the weights are damaged (a diverged run?) and are refused.")


def adapter_directory(name_or_path) -> Path:
    """The adapter folder `name_or_path` names: a folder, or the short name of a shipped adapter (`mtu.shipped`)."""
    path = Path(resolve(name_or_path, "adapter", "adapter"))
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            raise pickle_refusal(path)
        raise InputError(f"adapter {str(name_or_path)!r} is a file; give the adapter folder (with {CONFIG_NAME} and "
                         f"{WEIGHTS_NAME}).")
    return path


def _check_record(record, path: Path) -> None:
    """The keys and types of an adapter record that loading reads, each refusal naming the file."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"{path} is not an MTU adapter config (expected \"format\": \"{FORMAT}\").")
    if record.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path} has format_version {record.get('format_version')!r}; this mtu reads "
                         f"{FORMAT_VERSION}.")
    base = record.get("base")
    if not isinstance(base, dict) or not isinstance(base.get("unet_config"), dict):
        raise InputError(f"{path} has no \"base\" record with the base's \"unet_config\" (got {base!r}); the "
                         f"adapter cannot be matched to a base. Upcycle it anew or restore its {path.name}.")
    if not isinstance(record.get("config"), dict):
        raise InputError(f"{path} has no \"config\" record (the MTUConfig), got {record.get('config')!r}.")
    unconditional = record.get("unconditional_text")
    if unconditional is not None and unconditional not in UNCONDITIONAL_TEXT:
        raise InputError(f"{path} has \"unconditional_text\" {unconditional!r}; expected one of "
                         f"{UNCONDITIONAL_TEXT}.")
    if not isinstance(record.get("tasks", {}), dict):
        raise InputError(f"{path} has \"tasks\" {record.get('tasks')!r}; expected {{name: task spec}}.")


class PluginNotLoadedWarning(UserWarning):
    """An adapter's task comes from a plug-in module this process has not imported."""


def _register_tasks(record: dict, path: Path) -> None:
    """Registers the tasks the adapter defines that this process lacks; refuses one defined differently. A task that
    came from a plug-in module the process has not loaded is said in one line naming the module (its model part
    loads from the record; its data, toy world and sampling defaults need the module)."""
    plugins = record.get("plugins", {})
    for name, data in record.get("tasks", {}).items():
        if name not in available_tasks() and isinstance(plugins, dict) and isinstance(plugins.get(name), str):
            warnings.warn(f"{path}: task {name!r} comes from plug-in module {plugins[name]!r}, which is not loaded; "
                          f"load it with `--plugin {plugins[name]}` (or `plugins:` in the run file) for its data, "
                          f"evaluation and sampling defaults.", PluginNotLoadedWarning, stacklevel=3)
        fields = set(TaskSpec.__dataclass_fields__)
        if not isinstance(data, dict) or not set(data) <= fields:
            raise InputError(f"{path}: task {name!r} is recorded as {data!r}; expected a mapping of {sorted(fields)}.")
        spec = TaskSpec.from_dict(data)
        if name not in available_tasks():
            register_task(spec)
        elif get_task(name) != spec:
            raise InputError(f"{path}: the adapter defines task {name!r} as {spec}, but this process has it "
                             f"registered as {get_task(name)}.")


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
        raise InputError(f"{path} is not valid JSON ({error}); the adapter is corrupt.") from error
    _check_record(record, path)
    _register_tasks(record, path)
    try:
        record["config"] = MTUConfig.from_dict(record["config"])
    except InputError as error:
        raise InputError(f"{path}: \"config\" is invalid: {error}") from error
    if "task_text_encoders" in record:
        try:
            check_encoder_tasks(record["task_text_encoders"], record["config"].tasks, "\"task_text_encoders\"")
        except InputError as error:
            raise InputError(f"{path}: {error}") from None
    return record


def read_adapter_tensors(directory) -> dict[str, torch.Tensor]:
    """All tensors of the adapter file; a missing, truncated or corrupt file, a pickle, or NaN/inf values raise
    InputError naming it."""
    path = adapter_directory(directory) / WEIGHTS_NAME
    tensors = read_safetensors(path, "MTU adapter weights")
    check_finite(tensors, path)
    return tensors


def adapter_shapes(directory) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the adapter file, from its header only (no tensor is read)."""
    with open_safetensors(adapter_directory(directory) / WEIGHTS_NAME, "MTU adapter weights") as handle:
        return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}


def expected_shapes(record: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the tensors an adapter with this record must hold: its config upcycled, on the meta device,
    over the recorded base architecture."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(record["base"]["unet_config"])
    model = upcycle(unet, record["config"], fingerprint=False)
    return {name: tuple(param.shape) for name, param in model.mtu_named_parameters()}


def _name_mismatch(expected, found) -> str | None:
    """"missing [...], unexpected [...]" (three names each at most) for tensor names that differ; None if none do."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if not missing and not unexpected:
        return None
    return (f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")


def check_adapter_shapes(record: dict, found: dict[str, tuple[int, ...]], source) -> None:
    """Refuses weights that the record's config does not make (a hand-edited config, another adapter's weights)."""
    expected = expected_shapes(record)
    mismatch = _name_mismatch(expected, found)
    if mismatch:
        raise InputError(f"{source} does not match its config ({CONFIG_NAME}): {mismatch}.")
    for name, shape in expected.items():
        if found[name] != shape:
            config = record["config"]
            raise InputError(f"{source}: tensor {name!r} has shape {found[name]}, but the config ({CONFIG_NAME}: "
                             f"N={config.num_experts}, G={config.granularity:g}) makes it {shape}; the config and "
                             f"the weights do not belong together.")


def _check_base(record: dict, unet, allow_base_mismatch: bool, source) -> None:
    expected, found = record["base"]["unet_config"], base_unet_config(unet)
    differing = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
    hint = " Pass allow_base_mismatch=True (CLI: --allow-base-mismatch) to load it anyway."
    if differing and not allow_base_mismatch:
        details = "; ".join(f"{k}: adapter {expected.get(k)!r} vs base {found.get(k)!r}" for k in differing[:4])
        raise InputError(f"{source}: the adapter was made for another base architecture ({details}).{hint}")
    if record["base"].get("fingerprint") and not differing and not allow_base_mismatch:
        matches, precision = fingerprint_matches(record["base"], unet)
        if not matches:
            raise InputError(f"{source}: the base weights differ from the ones the adapter was made from (compared "
                             f"at {precision} precision: fingerprints differ; recorded base "
                             f"{record['base'].get('name_or_path')!r}).{hint}")


def _load_recorded_base(record: dict, directory: Path, location: str, variant, single_file_config):
    """The base the adapter records, found at `location`; a failure names the recorded base and suggests --base."""
    recorded = record["base"]["name_or_path"]
    try:
        return load_base_unet(location, variant=variant, single_file_config=single_file_config)
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory}: the adapter's base {recorded!r} does not exist (nor relative to the "
                                f"folders above the adapter); pass the base's location with `base=` (CLI: --base)."
                                ) from None
    except InputError as error:
        if not looks_like_hub_id(location):
            raise
        raise InputError(f"{directory}: {error} (the adapter records its base as {recorded!r}; pass the base's "
                         f"location with `base=`, CLI: --base)") from None


def _load_base(record: dict, directory: Path, base, variant, single_file_config) -> tuple[object, str | None]:
    """(the base UNet, in its stored dtype so that an adapter of a half-precision base is checked at its precision;
    where it was loaded from, None for a given module): `base` if given, else the base the adapter records."""
    if base is not None and not isinstance(base, (str, os.PathLike)):
        return base, None
    location = str(base) if base is not None else record["base"].get("name_or_path")
    if not location:
        raise InputError(f"{directory / CONFIG_NAME} records no base location; pass `base=` (CLI: --base).")
    if Path(location).expanduser().is_file() and single_file_config is None:
        single_file_config = record["base"]["unet_config"]  # a single file's architecture, as the adapter records it
    if base is not None:
        return load_base_unet(location, variant=variant, single_file_config=single_file_config), location
    location = find_recorded_base(location, directory)
    return _load_recorded_base(record, directory, location, variant, single_file_config), location


def load_task_text_encoders(directory, tasks: list[str]) -> dict[str, torch.nn.Module]:
    """Each listed task's text encoder from the adapter folder `directory` (safetensors only; refused, naming the
    file, when missing, corrupt, a pickle or not finite)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    encoders = {}
    for task in tasks:
        folder = text_encoder_folder(directory, task)
        weights = read_safetensors(folder / "model.safetensors", f"task {task!r} text encoder")
        check_finite(weights, folder)
        config = CLIPTextConfig.from_pretrained(folder, local_files_only=True)
        encoders[task] = CLIPTextModel.from_pretrained(None, config=config, state_dict=weights)  # the file read once
    return encoders


def load_mtu(directory, base=None, *, allow_base_mismatch: bool = False, torch_dtype: torch.dtype | None = None,
             variant: str | None = None, single_file_config=None):
    """Restores an `MTUModel` saved with `save_pretrained`.

    Args:
        directory: The adapter folder, or a shipped adapter's short name ("toyworld", see `mtu.shipped`).
        base: The base UNet (`UNet2DConditionModel`, not upcycled), or where to load it from (see
            `load_base_unet`); None loads the base the adapter records (`bases.find_recorded_base`).
        allow_base_mismatch: Load even if the base's architecture or weights differ from the recorded ones.
        torch_dtype: dtype of the returned model. The base is loaded in its stored dtype, checked against the
            adapter's fingerprints (at a common precision, so a base stored in fp16 or fp32 both match an adapter
            made from either), then cast.
        variant: The base's weights variant (e.g. "fp16"); default the one the adapter records, for its recorded
            base.
        single_file_config: For a single-file `base`, the local diffusers folder of its architecture; default the
            architecture the adapter records.
    """
    directory = adapter_directory(directory)
    record = read_adapter_config(directory)
    # Everything about the adapter's own files is checked before the base is loaded.
    check_adapter_shapes(record, adapter_shapes(directory), directory / WEIGHTS_NAME)
    tensors = read_adapter_tensors(directory)
    encoders = load_task_text_encoders(directory, record.get("task_text_encoders", []))
    if base is None and variant is None:
        variant = record["base"].get("variant")  # the recorded base is read as it was
    unet, location = _load_base(record, directory, base, variant, single_file_config)
    if not isinstance(unet, UNet2DConditionModel):
        raise InputError(f"`base` must be a UNet2DConditionModel or a path/hub id, got {type(unet).__name__}.")
    _check_base(record, unet, allow_base_mismatch, directory)
    model = upcycle(unet, record["config"], fingerprint=record["base"],
                    base_name_or_path=location or record["base"].get("name_or_path"),
                    base_variant=variant if location else record["base"].get("variant"))
    load_mtu_tensors(model, tensors, directory / WEIGHTS_NAME)
    model.set_task_text_encoders(encoders)
    if record.get("unconditional_text") is not None:  # how its training encoded dropped text (`save_adapter`)
        model.unconditional_text = record["unconditional_text"]
    return model.to(torch_dtype) if torch_dtype is not None else model


def set_recorded_base(directory, name_or_path: str, base_unet) -> Path:
    """Rewrites where the adapter in `directory` says its base is (e.g. to a shipped base's short name), atomically.

    Args:
        directory: The adapter folder.
        name_or_path: The new base location: a folder, hub id or short name.
        base_unet: The base UNet that `name_or_path` loads; it must be the one the adapter was made from (same
            architecture and, if recorded, the same weights fingerprint), else InputError and nothing is written.
    Returns:
        The adapter folder.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise InputError(f"`name_or_path` must be a non-empty string, got {name_or_path!r}.")
    directory = adapter_directory(directory)
    _check_base(read_adapter_config(directory), base_unet, allow_base_mismatch=False, source=directory)
    path = directory / CONFIG_NAME
    raw = json.loads(path.read_text())  # as stored: read_adapter_config returns the config as an MTUConfig
    raw["base"]["name_or_path"] = name_or_path
    atomic_write_text(path, json.dumps(raw, indent=2) + "\n")
    return directory


@torch.no_grad()
def load_mtu_tensors(model, tensors: dict[str, torch.Tensor], source) -> None:
    """Copies adapter tensors into `model`, requiring exactly the model's MTU tensor names and shapes."""
    params = dict(model.mtu_named_parameters())
    mismatch = _name_mismatch(params, tensors)
    if mismatch:
        raise InputError(f"{source} does not match this MTU model: {mismatch}.")
    for name, param in params.items():
        if tensors[name].shape != param.shape:
            raise InputError(f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)}, the model expects "
                             f"{tuple(param.shape)}.")
        param.copy_(tensors[name])
