"""How a schema makes the condition image when no column holds it (`Schema.derived_condition`): a function of the
target, so a task plug-in adds its own (a greyscale copy for colorization) without editing the data layer.

A derivation is called as `derive(target=..., target_01=..., mask=..., generator=..., sr_scale=..., degradation=...)`
with the target crop as a (3, R, R) tensor in [-1, 1] (`target`) and in [0, 1] (`target_01`), the (1, R, R) mask
(1 = fill) or None, the sample's generator and the source's `sr_scale` and `degradation`; it returns the condition
as a (3, R, R) tensor in [-1, 1]. The first line of its docstring says in docs/DATA.md what it makes.
"""

from __future__ import annotations

import torch

from ..conditioning import upsample_for_sr
from .degradation import DegradationConfig, degrade


def degraded(*, target_01: torch.Tensor, generator: torch.Generator, sr_scale: int,
             degradation: DegradationConfig | None, **_) -> torch.Tensor:
    """a degraded low-resolution copy of the target (`mtu.data.degradation`)"""
    low_res = degrade(target_01, scale=sr_scale, generator=generator,
                      config=degradation or DegradationConfig())  # (3, R / scale, R / scale)
    # Upsampled back so that it is VAE-encoded at the target's size.
    upsampled = upsample_for_sr(low_res[None], target_01.shape[-2:], low=0.0, high=1.0)[0]  # (3, R, R)
    return upsampled * 2.0 - 1.0


def masked(*, target: torch.Tensor, mask: torch.Tensor, **_) -> torch.Tensor:
    """the target with the mask's region blanked"""
    return target * (mask < 0.5)  # as SD-inpainting: masked pixels are 0 in [-1, 1], i.e. mid-gray


def describe(derive) -> str:
    """The first line of `derive`'s docstring (what docs/DATA.md says the condition is)."""
    return (derive.__doc__ or derive.__name__).strip().splitlines()[0]
