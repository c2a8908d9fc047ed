"""Loading the base UNet a user names: a local diffusers folder, a hub id, a shipped base or architecture."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from ..shipped import resolve, short_names

RANDOM_PREFIX = "random:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _load_random(spec: str) -> UNet2DConditionModel:
    from ..architectures import ARCHITECTURES, build_unet

    parts = spec[len(RANDOM_PREFIX):].split(":")
    name, seed = parts[0], parts[1] if len(parts) > 1 else "0"
    if name not in ARCHITECTURES or len(parts) > 2 or not seed.isdigit():
        raise ValueError(f"`base` {spec!r} is not of the form random:<arch>[:<seed>] with arch in "
                         f"{sorted(ARCHITECTURES)}.")
    return build_unet(name, seed=int(seed))


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
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"`base` must be a folder, a hub id or random:<arch>, got {spec!r}.")
    if spec.startswith(RANDOM_PREFIX):
        unet = _load_random(spec)
        return unet.to(torch_dtype) if torch_dtype is not None else unet
    shipped = resolve(spec, "base", "`base`")
    if shipped is not spec:  # a shipped base's short name
        unet = load_base_unet(str(shipped), torch_dtype)
        # Keep the short name, not this installation's folder, so an adapter upcycled from it loads anywhere.
        unet.register_to_config(_name_or_path=spec)
        return unet
    path = Path(spec).expanduser()
    kwargs = {"use_safetensors": True, "torch_dtype": torch_dtype}
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"`base` {spec!r} is a file; give the folder of a diffusers pipeline or UNet.")
        location = str(path.resolve())
        if (path / "model_index.json").is_file():
            return UNet2DConditionModel.from_pretrained(location, subfolder="unet", **kwargs)
        if (path / "config.json").is_file():
            return UNet2DConditionModel.from_pretrained(location, **kwargs)
        raise ValueError(f"`base` folder {spec!r} holds neither a diffusers pipeline (model_index.json) nor a UNet "
                         f"(config.json).")
    if not _HUB_ID.match(spec):
        raise FileNotFoundError(f"`base` {spec!r} is neither an existing folder, a hub id (org/name) nor "
                                f"random:<arch>; shipped bases: {', '.join(short_names('base'))}.")
    try:
        return UNet2DConditionModel.from_pretrained(spec, subfolder="unet", **kwargs)
    except Exception as error:  # network, auth, missing files: one clear message
        raise OSError(f"could not load base {spec!r} from the Hugging Face Hub: {error}") from error
