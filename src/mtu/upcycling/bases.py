"""The base UNet: loading the one a user names (a local diffusers folder, a hub id, a shipped base or architecture)
and identifying it (its architecture config and a fingerprint of its weights, which an adapter records)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from ..errors import InputError
from ..shipped import resolve, short_names
from .files import PICKLE_SUFFIXES, pickle_refusal

RANDOM_PREFIX = "random:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes: identifies the exact base weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def base_unet_config(unet: UNet2DConditionModel) -> dict:
    """The architecture part of a UNet's config (no private `_` keys), JSON-normalised for comparison."""
    return json.loads(json.dumps({k: v for k, v in unet.config.items() if not k.startswith("_")}))


def _refuse_pickled_weights(folder: Path) -> None:
    """A UNet folder whose weights are only pickles (diffusion_pytorch_model.bin) is refused, never unpickled."""
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise pickle_refusal(pickles[0])


def _random_spec(spec: str) -> tuple[str, int]:
    """(architecture, seed) of `random:<arch>[:<seed>]`, or InputError."""
    from ..architectures import ARCHITECTURES

    parts = spec[len(RANDOM_PREFIX):].split(":")
    name, seed = parts[0], parts[1] if len(parts) > 1 else "0"
    if name not in ARCHITECTURES or len(parts) > 2 or not seed.isdigit():
        raise InputError(f"`base` {spec!r} is not of the form random:<arch>[:<seed>] with arch in "
                         f"{sorted(ARCHITECTURES)}.")
    return name, int(seed)


def check_base_spec(spec) -> tuple[str, str]:
    """What `spec` names, checked without loading any weights: ("random", spec), ("shipped", folder),
    ("pipeline", folder), ("unet", folder) or ("hub", id). Raises InputError (or FileNotFoundError) naming it.

    See `load_base_unet` for the forms `spec` may take.
    """
    if not isinstance(spec, str) or not spec:
        raise InputError(f"`base` must be a folder, a hub id or random:<arch>, got {spec!r}.")
    if spec.startswith(RANDOM_PREFIX):
        _random_spec(spec)
        return "random", spec
    shipped = resolve(spec, "base", "`base`")
    if shipped is not spec:  # a shipped base's short name
        return "shipped", str(shipped)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"`base` {spec!r} is a file; give the folder of a diffusers pipeline or UNet.")
        if (path / "model_index.json").is_file():
            _refuse_pickled_weights(path / "unet")
            return "pipeline", str(path.resolve())
        if (path / "config.json").is_file():
            _refuse_pickled_weights(path)
            return "unet", str(path.resolve())
        raise InputError(f"`base` folder {spec!r} holds neither a diffusers pipeline (model_index.json) nor a UNet "
                         f"(config.json).")
    if not _HUB_ID.match(spec):
        raise FileNotFoundError(f"`base` {spec!r} is neither an existing folder, a hub id (org/name) nor "
                                f"random:<arch>; shipped bases: {', '.join(short_names('base'))}.")
    return "hub", spec


def load_base_unet(spec: str, torch_dtype: torch.dtype | None = None) -> UNet2DConditionModel:
    """Loads a base UNet from `spec`.

    Args:
        spec: A diffusers pipeline folder (with `model_index.json`, the UNet in `unet/`), a UNet folder (with
            `config.json`), a Hugging Face hub id (pipeline repo, when online), the short name of a shipped base
            ("toyworld-base", see `mtu.shipped`), or `random:<arch>[:<seed>]` for a shipped architecture at seeded
            random init (`random:sd15`, `random:sdxl`, `random:tiny`).
        torch_dtype: Optional dtype to load the weights in.
    Only safetensors weights are read (never pickle).
    """
    from ..architectures import build_unet

    kind, location = check_base_spec(spec)
    kwargs = {"use_safetensors": True, "torch_dtype": torch_dtype}
    if kind == "random":
        name, seed = _random_spec(spec)
        unet = build_unet(name, seed=seed)
        return unet.to(torch_dtype) if torch_dtype is not None else unet
    if kind == "shipped":
        unet = load_base_unet(location, torch_dtype)
        # Keep the short name, not this installation's folder, so an adapter upcycled from it loads anywhere.
        unet.register_to_config(_name_or_path=spec)
        return unet
    if kind == "pipeline":
        return UNet2DConditionModel.from_pretrained(location, subfolder="unet", **kwargs)
    if kind == "unet":
        return UNet2DConditionModel.from_pretrained(location, **kwargs)
    assert kind == "hub", kind
    try:
        return UNet2DConditionModel.from_pretrained(spec, subfolder="unet", **kwargs)
    except OSError as error:  # diffusers' errors for a repo it cannot reach or read (network, auth, missing files)
        raise InputError(f"could not load base {spec!r} from the Hugging Face Hub: {error}") from error
