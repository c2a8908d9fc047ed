"""The fifteenth round's diagnosis (benchmarks/sr_capacity.py): which UNet weights it makes trainable beside MTU's."""

import json
from pathlib import Path

from .scripts import load_benchmark

ARCHITECTURES = Path(__file__).resolve().parents[1] / "src" / "mtu" / "architectures"


def test_extra_parameters_are_the_named_frozen_weights_only():
    from diffusers import UNet2DConditionModel

    capacity = load_benchmark("sr_capacity")
    unet = UNet2DConditionModel.from_config(json.loads((ARCHITECTURES / "toyworld_unet.json").read_text()))
    unet.requires_grad_(False)
    unet.conv_in.requires_grad_(True)  # as a task's input conv that the run already trains
    read = capacity.extra_parameters(unet, "read")
    names = {id(param): name for name, param in unet.named_parameters()}
    assert read and all(names[id(param)].startswith("down_blocks.0.resnets.") for param in read)
    assert len(read) == len(list(unet.down_blocks[0].resnets.parameters()))
    every = capacity.extra_parameters(unet, "all")
    assert len(every) == len(list(unet.parameters())) - len(list(unet.conv_in.parameters()))
    assert capacity.extra_parameters(unet, "none") == []  # the control arm: the run as it is
    assert capacity.extra_parameters(unet, "pixels") == []  # its extra weights are the widened conv's, not these


def test_pixels_arm_widens_sr_input_conv_at_zero_and_appends_the_pixels_on_the_latent_grid(base):
    import torch

    import mtu
    from mtu import MTUConfig

    from .conftest import nudge, tiny_inputs

    capacity = load_benchmark("sr_capacity")
    model = mtu.upcycle(base, MTUConfig(tasks=["t2i", "sr"], num_experts=2)).eval()
    nudge(model)
    inputs = tiny_inputs(channels=8)
    with torch.no_grad():
        before = model(**inputs, task="sr").sample
        params = capacity.widen_input_conv(model, "sr", 48)
        widened = {**inputs, "sample": torch.cat([inputs["sample"], torch.randn(2, 48, 8, 8)], dim=1)}
        assert torch.equal(model(**widened, task="sr").sample, before)  # the new channels start at zero
        params[0][:, 8:].add_(0.1)
        assert not torch.allclose(model(**widened, task="sr").sample, before)  # and are read once trained
        assert model(**tiny_inputs(channels=4), task="t2i").sample.shape == (2, 4, 8, 8)  # other tasks untouched

    class Spec:
        def __init__(self, name):
            self.name = name

    latents = torch.zeros(1, 4, 8, 8)
    channels = capacity.with_pixels(lambda vae, spec, image, mask, size: latents)
    image = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(1, 3, 32, 32)
    out = channels(None, Spec("sr"), image)
    assert out.shape == (1, 4 + 48, 8, 8) and torch.equal(out[:, :4], latents)
    assert out[0, 4, 0, 0] == image[0, 0, 0, 0] and out[0, 5, 0, 0] == image[0, 0, 0, 1]  # 4x4 cells on the grid
    assert channels(None, Spec("edit"), image) is latents  # other tasks' conditions unchanged
    scaled = capacity.with_pixels(lambda vae, spec, image, mask, size: latents, 10.0)(None, Spec("sr"), image)
    assert torch.equal(scaled[:, 4:], 10.0 * out[:, 4:])


def test_pixel_scale_is_refused_without_the_pixels_arm(capsys):
    import pytest

    capacity = load_benchmark("sr_capacity")
    with pytest.raises(SystemExit):
        capacity.main(["--extra", "read", "--pixel-scale", "10", "--out", "x", "--log", "y"])
    assert "--pixel-scale 10.0: must be > 0, and only with --extra pixels" in capsys.readouterr().err
