"""Shared fixtures: the shipped tiny UNet at random init, inputs for it, and the nudge that makes tests bite."""

from __future__ import annotations

import copy

import pytest
import torch

from mtu.architectures import build_unet


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Puts torch's thread count back after every test: a test that runs a script's `main` with `--threads 1`
    (torch.set_num_threads is process-wide) once made a later in-process training run use one thread while its
    subprocess twin used two, and the bitwise resume test failed on the different float sums."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


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
