"""Real architectures from their public configs (meta device: shapes only): parameters, blocks, FLOPs."""

import pytest
import torch

import mtu
from mtu import MTUConfig
from mtu.architectures import build_unet, unet_config
from mtu.inspection import cost_report, format_report, unet_inputs

EXPECTED = {
    # architecture: (parameters, transformer blocks, FFN parameters)
    "sd15": (859_520_964, 16, 148_797_120),
    "sdxl": (2_567_463_684, 70, 1_229_548_800),
}


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def report(request):
    config = MTUConfig(num_experts=4, granularity=1 / 4)
    return request.param, cost_report(config, unet_config(request.param), (32, 32), tasks=["t2i", "edit"])


def test_base_matches_the_public_model(report):
    arch, result = report
    parameters, blocks, ffn = EXPECTED[arch]
    assert result["base"] == {"parameters": parameters, "transformer_blocks": blocks, "ffn_parameters": ffn}
    assert result["mtu"]["upcycled_blocks"] == blocks


def test_mtu_keeps_the_parameter_count(report):
    """N=4, G=1/4: experts hold as many weights as the FFNs; routers, task LNs and convs add < 0.2%."""
    arch, result = report
    parameters = result["mtu"]["parameters"]
    assert parameters["total"] / EXPECTED[arch][0] < 1.002
    # Expert weights equal the FFN weights; each of the 4 experts carries its own output bias (3 extra per layer).
    assert EXPECTED[arch][2] <= parameters["experts"] < EXPECTED[arch][2] * 1.001
    assert parameters["trainable"] == sum(parameters[k] for k in ("experts", "task_layernorms", "routers",
                                                                   "task_embeddings", "task_input_convs"))


def test_flops_folded_equal_base_and_unfolded_within_one_percent(report):
    _, result = report
    for task, row in result["tasks"].items():
        assert row["folded_flops"] == row["base_flops"], task
        assert row["mtu_flops"] <= 1.01 * row["base_flops"], task
        assert row["folded_parameters"] == row["base_parameters"], task


def test_report_prints(report):
    arch, result = report
    text = format_report(result)
    assert f"{EXPECTED[arch][0]:,}" in text and "folded/base" in text


@pytest.mark.slow
def test_sd15_real_weights_preserve_and_fold():
    """SD1.5 shape with real (random) weights on CPU: init preserves the base; folded edit == MTU edit."""
    unet = build_unet("sd15", seed=0).eval()
    inputs = unet_inputs(unet_config("sd15"), (16, 16))
    with torch.no_grad():
        expected = unet(**inputs).sample
        model = mtu.upcycle(unet, MTUConfig()).eval()
        torch.testing.assert_close(model(**inputs, task="t2i").sample, expected, rtol=1e-4, atol=1e-4)
        for _, param in model.mtu_named_parameters():
            param.add_(0.01 * torch.randn_like(param))
        edit = {**inputs, "sample": torch.randn(1, 8, 16, 16)}
        torch.testing.assert_close(model.fold("edit")(**edit).sample, model(**edit, task="edit").sample,
                                   rtol=1e-4, atol=1e-4)
