"""Shared fixtures: the shipped tiny UNet at random init, inputs for it, and the nudge that makes tests bite."""

from __future__ import annotations

import copy

import pytest
import torch

from mtu.architectures import build_unet


@pytest.fixture(scope="session")
def tiny_base():
    """A 7-block UNet2DConditionModel (dims 32 and 64, d_ffn 128 and 256) at seeded random init."""
    return build_unet("tiny", seed=0).eval()


@pytest.fixture
def base(tiny_base):
    """A fresh copy for tests that upcycle (upcycling modifies the UNet in place)."""
    return copy.deepcopy(tiny_base)


def tiny_inputs(batch: int = 2, channels: int = 4, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(batch, channels, 8, 8, generator=generator),
        "timestep": torch.tensor([10, 500, 999, 250][:batch]),
        "encoder_hidden_states": torch.randn(batch, 7, 32, generator=generator),
    }


@torch.no_grad()
def nudge(model, scale: float = 0.05, seed: int = 1) -> None:
    """Moves every MTU parameter away from its initial value, so equivalence tests can fail."""
    generator = torch.Generator().manual_seed(seed)
    for _, param in model.mtu_named_parameters():
        param.add_(scale * torch.randn(param.shape, generator=generator))


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Runs the test from a working directory (with a space in its name) other than the one its folders were made
    in: what a user who trained in one folder and generates in another does (issue 14)."""
    folder = tmp_path / "another cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder
