"""init="preserve": right after upcycling, every task's t2i output equals the base UNet's (Sec. 5 + our init)."""

import pytest
import torch

import mtu
from mtu import MTUConfig

from .conftest import tiny_inputs

GRID = [(n, g) for n in (1, 2, 4, 8, 16) for g in (1 / n, 0.5, 1.0, 2.0)]


@pytest.mark.parametrize("num_experts, granularity", GRID, ids=[f"N{n}-G{g:g}" for n, g in GRID])
def test_preserve_equals_base(tiny_base, base, num_experts, granularity):
    inputs = tiny_inputs()
    if num_experts * granularity < 1:
        # N*G < 1: the experts hold fewer units than the dense FFN, so no init can reproduce it exactly.
        with pytest.raises(ValueError, match="needs num_experts \\* granularity >= 1"):
            MTUConfig(num_experts=num_experts, granularity=granularity)
        return
    model = mtu.upcycle(base, MTUConfig(num_experts=num_experts, granularity=granularity)).eval()
    with torch.no_grad():
        expected = tiny_base(**inputs).sample
        actual = model(**inputs, task="t2i").sample
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_image_tasks_ignore_their_conditioning_channels_at_init(tiny_base, base):
    """Extra input channels start at zero weight (InstructPix2Pix init), so `edit` at init is the base too."""
    inputs = tiny_inputs()
    model = mtu.upcycle(base, MTUConfig()).eval()
    edit = {**inputs, "sample": torch.cat([inputs["sample"], torch.randn(2, 4, 8, 8)], dim=1)}
    with torch.no_grad():
        torch.testing.assert_close(model(**edit, task="edit").sample, tiny_base(**inputs).sample,
                                   rtol=1e-5, atol=1e-5)


def test_shard_init_is_the_papers_plain_copy(tiny_base, base):
    """`shard` copies shards without rescaling: with N=4 the routed FFN is not the dense one."""
    inputs = tiny_inputs()
    model = mtu.upcycle(base, MTUConfig(init="shard")).eval()
    with torch.no_grad():
        difference = (model(**inputs, task="t2i").sample - tiny_base(**inputs).sample).abs().max()
    assert difference > 1e-3


def test_experts_partition_the_dense_ffn(base):
    """N*G = 1: expert e's units are dense units [e*d_e, (e+1)*d_e) -- the paper's shards."""
    proj = base.down_blocks[0].attentions[0].transformer_blocks[0].ff.net[0].proj.weight.detach().clone()
    model = mtu.upcycle(base, MTUConfig(num_experts=4))
    layer = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].ff
    value = proj[: layer.ffn_width]
    for expert in range(4):
        torch.testing.assert_close(layer.w_in[expert, : layer.expert_width],
                                   value[expert * layer.expert_width:(expert + 1) * layer.expert_width])
