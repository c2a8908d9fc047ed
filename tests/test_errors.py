"""Bad inputs to upcycle / forward / fold each raise a clear error naming the offending value."""

import pytest
import torch
from diffusers import UNet2DModel

import mtu
from mtu import MTUConfig

from .conftest import tiny_inputs


def test_expert_width_must_be_whole(base):
    with pytest.raises(ValueError, match="block 'down_blocks.0.attentions.0.transformer_blocks.0'.*d_ffn=128.*"
                                         "42.6667"):
        mtu.upcycle(base, MTUConfig(num_experts=3))


def test_failed_upcycle_leaves_the_unet_untouched(base):
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.raises(ValueError):
        mtu.upcycle(base, MTUConfig(num_experts=3))
    after = base.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_base_without_transformer_blocks():
    unet = mtu.architectures.build_unet("tiny", down_block_types=["DownBlock2D", "DownBlock2D"],
                                        up_block_types=["UpBlock2D", "UpBlock2D"], mid_block_type=None)
    with pytest.raises(ValueError, match="no transformer blocks"):
        mtu.upcycle(unet, MTUConfig())


def test_not_a_conditional_unet():
    with pytest.raises(TypeError, match="must be a diffusers UNet2DConditionModel, got UNet2DModel"):
        mtu.upcycle(UNet2DModel(block_out_channels=(32, 64), norm_num_groups=16, down_block_types=("DownBlock2D",) * 2,
                                        up_block_types=("UpBlock2D",) * 2), MTUConfig())


def test_upcycling_twice_is_refused(base):
    mtu.upcycle(base, MTUConfig())
    with pytest.raises(ValueError, match="already upcycled"):
        mtu.upcycle(base, MTUConfig())


def test_target_block_pattern_that_matches_nothing(base):
    with pytest.raises(ValueError, match="`target_blocks` entry 'middle.*' matches no transformer block"):
        mtu.upcycle(base, MTUConfig(target_blocks=["middle.*"]))


def test_target_blocks_selects_a_subset(base):
    model = mtu.upcycle(base, MTUConfig(target_blocks=["mid_block.*"]))
    names = [name for name, module in model.mtu_modules() if isinstance(module, mtu.MTUFeedForward)]
    assert names == ["mid_block.attentions.0.transformer_blocks.0.ff"]


def test_unknown_task_at_forward(base):
    model = mtu.upcycle(base, MTUConfig(tasks=["t2i", "edit"]))
    with pytest.raises(ValueError, match="unknown task 'sr'; this model was upcycled for tasks \\['t2i', 'edit'\\]"):
        model(**tiny_inputs(), task="sr")


def test_wrong_channel_count_for_task(base):
    model = mtu.upcycle(base, MTUConfig())
    with pytest.raises(ValueError, match="task 'edit' expects `sample` with 8 channels, got 4"):
        model(**tiny_inputs(channels=4), task="edit")


def test_task_list_of_wrong_length(base):
    model = mtu.upcycle(base, MTUConfig())
    with pytest.raises(ValueError, match="`task` lists 3 tasks for a batch of 2 samples"):
        model(**tiny_inputs(), task=["t2i", "t2i", "edit"])


def test_unet_called_without_task(base):
    model = mtu.upcycle(base, MTUConfig())
    with pytest.raises(RuntimeError, match="called without a task"):
        model.unet(**tiny_inputs())


def test_fold_unknown_task(base):
    model = mtu.upcycle(base, MTUConfig(tasks=["t2i"]))
    with pytest.raises(ValueError, match="unknown task 'edit'"):
        mtu.fold(model, "edit")


def test_route_restores_state_after_an_error(base):
    model = mtu.upcycle(base, MTUConfig())
    with pytest.raises(ValueError):
        model(**tiny_inputs(channels=4), task="edit")
    with pytest.raises(RuntimeError, match="called without a task"):
        model.unet(**tiny_inputs())  # no hook left behind


def test_only_mtu_parameters_are_trainable(base):
    model = mtu.upcycle(base, MTUConfig())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in model.mtu_named_parameters()}
    assert all(any(part in name for part in ("task_embeddings", ".ff.", "conv_in.convs.")) for name in trainable)
