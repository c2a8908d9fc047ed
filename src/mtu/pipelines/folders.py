"""Pipeline folders: where a pipeline's base is and what it holds (components, weights variants, a safety
checker), and the folder `save_pretrained` writes (the base's components as diffusers writes them, and in `unet/` the
base UNet beside the MTU adapter; two one-line modules let diffusers' generic loader find mtu's classes).
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import diffusers.pipelines
import torch
from diffusers import DiffusionPipeline

from ..errors import InputError
from ..shipped import resolve, short_names
from ..upcycling.bases import (RANDOM_PREFIX, base_unet_config, check_weights_variant, fingerprint_matches,
                               hub_revision_kwargs, looks_like_hub_id)
from ..upcycling.files import CONFIG_NAME
from ..upcycling.model import MTUModel
from ..upcycling.serialization import load_mtu
from .defaults import Family, check_sampling

LOADABLE_LIBRARIES = ("diffusers", "transformers")  # what a base's model_index.json may name


def is_baseline_folder(adapter) -> bool:
    """A trained baseline's folder holds method.json (`mtu.training.methods.BASELINE_RECORD`), not an adapter."""
    return (Path(adapter).expanduser() / "method.json").is_file()


def check_base_location(base) -> str:
    """`base` as a string if it is a diffusers pipeline folder or a hub id, the shipped folder if it is a shipped
    base's short name ("toyworld-base"); raises before anything loads."""
    text = str(resolve(base, "base", "`base`"))
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise InputError(f"`base` {text!r} is not a diffusers pipeline folder (no model_index.json); the "
                             f"pipeline needs the base's VAE, text encoder and tokenizer.")
        return str(path)
    if text.startswith(RANDOM_PREFIX):
        raise InputError(f"`base` {text!r} is a bare UNet architecture; give the diffusers pipeline folder or hub "
                         f"id of that base (its VAE, text encoder and tokenizer).")
    if not looks_like_hub_id(text):
        raise FileNotFoundError(f"`base` {text!r} is neither an existing folder nor a hub id (org/name); shipped "
                                f"bases: {', '.join(short_names('base'))}.")
    return text


def adapter_family(record: dict) -> Family:
    """"sdxl" or "sd": the pipeline family of the base an adapter record (`read_adapter_config`) was made for."""
    return "sdxl" if record["base"]["unet_config"].get("addition_embed_type") == "text_time" else "sd"


class _FromBase:
    """The default of `safety_checker=`: the base folder's own, when it has one."""

    def __repr__(self) -> str:
        return "<the base's>"


FROM_BASE = _FromBase()


def check_variant(variant) -> str | None:
    """`variant` (diffusers' weights variant, "fp16" for `model.fp16.safetensors`) is None or a plain name."""
    if variant is not None and (not isinstance(variant, str) or not re.fullmatch(r"[\w-]+", variant)):
        raise InputError(f"`variant` must be None or a weights variant name such as 'fp16', got {variant!r}.")
    return variant


def _component_class(index: dict, name: str, base) -> type | None:
    """The class model_index.json names for `name`, or None where it lists none ([null, null] or no entry)."""
    entry = index.get(name) or [None, None]
    library, class_name = entry[:2]
    if library is None and class_name is None:
        return None
    if library in LOADABLE_LIBRARIES:
        module = importlib.import_module(library)
    elif isinstance(library, str) and hasattr(diffusers.pipelines, library):  # ["stable_diffusion", "...Checker"]
        module = getattr(diffusers.pipelines, library)
    else:
        module = None
    component_class = getattr(module, str(class_name), None) if module is not None else None
    if component_class is None:
        raise InputError(f"`base` {str(base)!r} has no loadable {name!r} component (model_index.json lists "
                         f"{index.get(name)!r}; supported libraries: {LOADABLE_LIBRARIES} and diffusers' "
                         f"pipeline modules).")
    return component_class


def load_base_components(base, names: tuple[str, ...], torch_dtype: torch.dtype | None = None, *,
                         variant: str | None = None, optional: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """({name: component}, model_index) of a diffusers pipeline folder or hub id; weights from safetensors only.

    Args:
        base: The pipeline folder or hub id.
        names: Components the pipeline needs; a missing one is an `InputError`.
        torch_dtype: dtype for the weights.
        variant: Weights variant ("fp16": `model.fp16.safetensors`) read for every component with weights.
        optional: Components loaded where the base lists them, else None (the safety checker and its
            feature extractor).
    """
    location = check_base_location(base)
    repo, revision = hub_revision_kwargs(location)  # a hub id's `@revision`, as `revision=`
    index = DiffusionPipeline.load_config(repo, **revision)
    components = {}
    for name in names + optional:
        component_class = _component_class(index, name, base)
        if component_class is None and name in optional:
            components[name] = None
            continue
        if component_class is None:
            raise InputError(f"`base` {str(base)!r} has no {name!r} component (model_index.json lists "
                             f"{index.get(name)!r}).")
        kwargs = {}
        if issubclass(component_class, torch.nn.Module):
            check_weights_variant(Path(location) / name, variant, base=location)
            kwargs = {"use_safetensors": True, **({"torch_dtype": torch_dtype} if torch_dtype else {}),
                      **({"variant": variant} if variant else {})}
        components[name] = component_class.from_pretrained(repo, subfolder=name, **kwargs, **revision)
    return components, index


# ---- a saved pipeline folder: the base's components as diffusers writes them, and in unet/ the base UNet beside
# the MTU adapter; two one-line modules let diffusers' generic loader find mtu's classes ----

SAVE_COMMAND = "save_pretrained"  # how the folder's marker (`mtu.outputs`) names its writer
PIPELINE_MODULE = "mtu_pipeline"  # <folder>/mtu_pipeline.py: model_index.json's `_class_name` [module, class]
UNET_MODULE = "mtu_unet"  # <folder>/unet/mtu_unet.py: model_index.json's `unet` [module, "SavedMTUModel"]
MODULE_TEXT = ("# Written by mtu's save_pretrained so that diffusers' DiffusionPipeline.from_pretrained(folder,\n"
                "# trust_remote_code=True) can load this folder; it only imports the installed mtu package.\n"
                "from mtu.pipelines import {name}  # noqa: F401\n")


def saved_pipeline_folder(name_or_path) -> Path | None:
    """The folder if `name_or_path` is a pipeline folder `save_pretrained` wrote (model_index.json, and the MTU
    adapter in unet/), else None."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        return None
    path = Path(name_or_path).expanduser()
    return path if (path / "model_index.json").is_file() and (path / "unet" / CONFIG_NAME).is_file() else None


def saved_sampling(folder: Path, family: Family, specs) -> dict:
    """The checked `sampling_defaults` a saved pipeline folder's model_index.json records, or {}."""
    path = folder / "model_index.json"
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}).") from error
    sampling = index.get("sampling_defaults") if isinstance(index, dict) else None
    return {} if sampling is None else check_sampling(sampling, family, specs, f"{path}: `sampling_defaults`")


class SavedMTUModel(torch.nn.Module):
    """What diffusers' generic `DiffusionPipeline.from_pretrained` calls to load a saved pipeline's `unet/` (named
    there by unet/mtu_unet.py); never instantiated. An `nn.Module` so that diffusers hands it `torch_dtype`."""

    @classmethod
    def from_pretrained(cls, folder, torch_dtype: torch.dtype | None = None) -> MTUModel:
        """The MTU model of a saved pipeline's `unet/` folder, on the base UNet stored beside it."""
        return load_mtu(folder, base=str(folder), torch_dtype=torch_dtype)


def _relation(target: Path, source: Path) -> str | None:
    if target == source:
        return "is"
    return "lies inside" if source in target.parents else "contains" if target in source.parents else None


def claim_save_directory(save_directory, overwrite: bool, sources: Mapping[str, str]):
    """The `mtu.outputs.OutputFolder` `save_pretrained` writes; raises InputError before anything is written for
    a file, a folder of other files (unless `overwrite`), or one that is, holds or lies inside what it reads."""
    from ..outputs import claim_output, read_marker

    if not isinstance(save_directory, (str, os.PathLike)) or not str(save_directory):
        raise InputError(f"`save_directory` must name a folder, got {save_directory!r}.")
    shown = str(save_directory)
    target = Path(save_directory).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise InputError(f"`save_directory` {shown!r} is an existing file; save_pretrained writes a folder.")
    for label, source in sources.items():
        relation = Path(source).expanduser().exists() and _relation(target, Path(source).expanduser().resolve())
        if relation:
            raise InputError(f"`save_directory` {shown!r} {relation} the {label} {source!r} that the pipeline reads "
                             f"from; writing there could overwrite it. Choose another folder.")
    entries = sorted(entry.name for entry in target.iterdir()) if target.is_dir() else []
    if entries and not overwrite and (read_marker(target) or {}).get("command") != SAVE_COMMAND:
        raise InputError(f"`save_directory` {shown!r} already holds files that save_pretrained did not write (such "
                         f"as {entries[0]!r}); choose a new or empty folder, or pass overwrite=True to replace only "
                         f"the files save_pretrained writes there (nothing else is removed).")
    return claim_output(target, command=SAVE_COMMAND, overwrite=True, field="`save_directory`")


def check_same_base(model: MTUModel, base_unet, location: str) -> None:
    """`base_unet` (read from `location`) is the UNet `model` was upcycled from: same architecture, and the same
    weights where the model records their fingerprint."""
    expected = model.base_info.get("unet_config")
    if (expected is not None and base_unet_config(base_unet) != expected) or (
            model.base_info.get("fingerprint") and not fingerprint_matches(model.base_info, base_unet)[0]):
        raise InputError(f"the base UNet in {location!r} is not the one this pipeline's MTU model was made from "
                         f"(its architecture or weights fingerprint differs); nothing was saved. Build the pipeline "
                         f"with `from_base` on the model's own base.")
