"""Gradient checkpointing recomputes blocks after `route` has exited; gradients must equal the plain ones."""

import copy

import torch

import mtu
from mtu import MTUConfig

from .conftest import nudge, tiny_inputs


def _grads(model, tasks):
    model.zero_grad()
    inputs = tiny_inputs(batch=2, channels=8)
    model(**inputs, task=tasks).sample.square().mean().backward()
    return {name: p.grad.clone() for name, p in model.mtu_named_parameters() if p.grad is not None}


def test_checkpointed_gradients_equal_plain(base):
    plain = mtu.upcycle(base, MTUConfig()).train()
    nudge(plain)
    checkpointed = copy.deepcopy(plain)
    checkpointed.enable_gradient_checkpointing()
    tasks = ["edit", "t2i"]
    expected, actual = _grads(plain, tasks), _grads(checkpointed, tasks)
    assert expected.keys() == actual.keys() and len(expected) > 10
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_plain_diffusers_checkpointing_would_lose_the_task(base):
    """Why MTUModel.enable_gradient_checkpointing exists: diffusers' own recomputes blocks with no task."""
    import pytest

    model = mtu.upcycle(base, MTUConfig()).train()
    model.unet.enable_gradient_checkpointing()
    loss = model(**tiny_inputs(channels=8), task="edit").sample.mean()
    with pytest.raises(RuntimeError, match="called without a task"):
        loss.backward()
