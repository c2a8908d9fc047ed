"""Public UNet architectures shipped as configs, for real-shape checks at random init (no weights, no hub).

`sd15` is Stable Diffusion 1.5's UNet, `sdxl` SDXL-base 1.0's, `tiny` a 7-block UNet for fast tests,
`toyworld` the embedded toy-world base model's UNet (8x8 latents of 32x32 images).
"""

from __future__ import annotations

import json
from importlib import resources

import torch
from diffusers import UNet2DConditionModel

ARCHITECTURES = {"sd15": "sd15_unet.json", "sdxl": "sdxl_unet.json", "tiny": "tiny_unet.json",
                 "toyworld": "toyworld_unet.json"}


def unet_config(name: str) -> dict:
    """The diffusers config dict of a shipped architecture."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; shipped: {', '.join(ARCHITECTURES)}.")
    return json.loads(resources.files(__name__).joinpath(ARCHITECTURES[name]).read_text())


def build_unet(name: str, seed: int = 0, device: str | torch.device = "cpu", **overrides) -> UNet2DConditionModel:
    """A `UNet2DConditionModel` of a shipped architecture at seeded random init (on "meta": shapes only).

    The global RNG is left as it was.
    """
    config = {**unet_config(name), **overrides}
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(config)
    unet.register_to_config(_name_or_path=f"random:{name}:{seed}")
    return unet
