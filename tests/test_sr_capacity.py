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
