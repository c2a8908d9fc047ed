"""Task registry: built-in tasks, their channel counts, and user-registered tasks."""

import pytest
import torch

import mtu
from mtu import MTUConfig, TaskSpec, get_task, register_task

from .conftest import tiny_inputs


@pytest.mark.parametrize("name, channels", [("t2i", 4), ("edit", 8), ("sr", 8), ("inpaint", 8), ("inpaint_mask", 9)])
def test_builtin_channels(name, channels):
    assert get_task(name).in_channels(4) == channels


def test_sr_has_no_prompt():
    assert not get_task("sr").uses_prompt


def test_user_task_without_editing_the_package(base):
    register_task(TaskSpec("sketch2img", "sketch to image", image_inputs=("image",)))
    model = mtu.upcycle(base, MTUConfig(tasks=["t2i", "sketch2img"]))
    inputs = tiny_inputs(channels=8)
    with torch.no_grad():
        assert model(**inputs, task="sketch2img").sample.shape == (2, 4, 8, 8)


def test_reregistering_differently_is_refused():
    register_task(TaskSpec("depth2img", image_inputs=("image",)))
    with pytest.raises(ValueError, match="already registered"):
        register_task(TaskSpec("depth2img", image_inputs=("mask",)))


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "bad name"}, "`name` must be a Python identifier"),
    ({"name": "x", "image_inputs": ("depth",)}, "`image_inputs` of task 'x' has 'depth'"),
])
def test_bad_task_spec(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskSpec(**kwargs)


def test_masked_image_without_mask_is_a_clear_error():
    from mtu.conditioning import condition_channels

    from .diffusers_parts import tiny_vae

    with pytest.raises(ValueError, match="task 'inpaint_mask' needs `mask_image`, got None"):
        condition_channels(tiny_vae(), get_task("inpaint_mask"), torch.zeros(1, 3, 16, 16), None)
