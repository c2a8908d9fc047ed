"""Task switching in place: one stock UNet serves every task; after `set_task` it equals a freshly folded model."""

from __future__ import annotations

import builtins

import pytest
import safetensors.torch
import torch
from diffusers import UNet2DConditionModel

import mtu
from mtu.architectures import build_unet
from mtu.export import TaskSwitchingUNet

from .conftest import nudge, tiny_inputs

TASKS = ["t2i", "edit", "sr", "inpaint_mask"]  # 4, 8, 8 and 9 input channels
SWITCHES = ["edit", "sr", "t2i", "inpaint_mask", "edit", "t2i"]  # edit -> sr changes only the FFNs


@pytest.fixture(scope="module")
def model():
    """The tiny UNet upcycled for four tasks, every MTU tensor nudged off its init so the tasks differ."""
    model = mtu.upcycle(build_unet("tiny", seed=0), mtu.MTUConfig(tasks=TASKS, num_experts=4)).eval()
    nudge(model)
    return model


def run(unet, task: str, model) -> torch.Tensor:
    with torch.no_grad():
        return unet(**tiny_inputs(batch=2, channels=model.task_in_channels(task))).sample


@pytest.mark.parametrize("keep", ["folded", "experts"])
def test_outputs_after_a_switch_equal_a_freshly_folded_model(model, keep):
    """Bit for bit, through a sequence that returns to earlier tasks; the folded model's state matches too."""
    switcher = TaskSwitchingUNet(model, keep=keep).eval()
    assert switcher.task == "t2i" and type(switcher.unet) is UNet2DConditionModel
    for task in SWITCHES:
        switcher.set_task(task)
        folded = mtu.fold(model, task).eval()
        assert switcher.task == task and switcher.unet.config.in_channels == folded.config.in_channels
        assert torch.equal(run(switcher, task, model), run(folded, task, model)), task
        state = switcher.unet.state_dict()
        for key, value in folded.state_dict().items():
            assert torch.equal(state[key], value), (task, key)
    # The comparison tells tasks apart: edit and sr take the same inputs but their FFNs differ.
    assert not torch.equal(run(mtu.fold(model, "edit"), "edit", model), run(mtu.fold(model, "sr"), "sr", model))


def test_shared_weights_are_the_model_tensors_and_a_switch_copies_nothing(model):
    """The shared tensors are the MTU model's own storage; in "folded" mode the active FFN tensors are the task's
    stored ones (a switch re-points them)."""
    switcher = TaskSwitchingUNet(model, keep="folded")
    block = "down_blocks.0.attentions.0.transformer_blocks.0"
    shared = switcher.unet.get_submodule(f"{block}.attn1.to_q").weight
    assert shared.data_ptr() == model.unet.get_submodule(f"{block}.attn1.to_q").weight.data_ptr()
    for task in ("edit", "t2i"):
        switcher.set_task(task)
        ffn = switcher.unet.get_submodule(f"{block}.ff.net.0.proj").weight
        assert any(ffn.data_ptr() == stored.data_ptr() for stored in switcher.folded[task])
        assert switcher.unet.conv_in is switcher.input_convs[task]
    live = TaskSwitchingUNet(model, keep="experts")
    live.set_task("edit")
    assert live.unet.conv_in is model.unet.conv_in.convs["edit"]


def test_switching_reads_no_file(model, monkeypatch):
    """Every task's weights are in memory: a switch opens no file."""
    switcher = TaskSwitchingUNet(model, keep="experts")

    def refuse(*args, **kwargs):
        raise AssertionError("set_task read a file")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    for task in SWITCHES:
        switcher.set_task(task)
    assert switcher.task == SWITCHES[-1]


def test_experts_mode_folds_the_model_weights_at_each_switch():
    """"experts" folds at the switch, so it follows later changes to the MTU model; "folded" keeps what it folded
    (a snapshot of every MTU tensor: FFNs and input convs)."""
    model = mtu.upcycle(build_unet("tiny", seed=0), mtu.MTUConfig(tasks=["t2i", "edit"], num_experts=4)).eval()
    nudge(model)
    live, snapshot = TaskSwitchingUNet(model, keep="experts"), TaskSwitchingUNet(model, keep="folded")
    before = run(mtu.fold(model, "edit"), "edit", model)
    nudge(model, seed=7)
    for switcher in (live, snapshot):
        switcher.set_task("edit")
    assert torch.equal(run(live, "edit", model), run(mtu.fold(model, "edit"), "edit", model))
    assert torch.equal(run(snapshot, "edit", model), before)


def test_bad_task_keep_or_model_is_one_line_error(model):
    switcher = TaskSwitchingUNet(model, tasks=["t2i", "edit"])
    with pytest.raises(mtu.InputError, match=r"unknown task 'inpaint'; this TaskSwitchingUNet serves tasks "
                                             r"\['t2i', 'edit'\]") as error:
        switcher.set_task("inpaint")
    assert "\n" not in str(error.value) and switcher.task == "t2i"
    with pytest.raises(mtu.InputError, match="unknown task 'sketch2img'"):
        TaskSwitchingUNet(model, tasks=["t2i", "sketch2img"])
    with pytest.raises(mtu.InputError, match=r"`keep` must be one of \('folded', 'experts'\), got 'routed'"):
        TaskSwitchingUNet(model, keep="routed")
    wide = mtu.upcycle(build_unet("tiny", seed=0), mtu.MTUConfig(tasks=["t2i"], num_experts=2, granularity=1.0))
    with pytest.raises(mtu.InputError, match=r"2 active experts x G=1 are wider than the base FFN \(top_k x G must "
                                             r"be <= 1\)") as error:
        TaskSwitchingUNet(wide)
    assert "\n" not in str(error.value)
