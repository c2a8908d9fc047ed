"""`fold`: one task of an MTU model as a stock diffusers UNet (the deployment path, Sec. 1 and Table 2)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from .input_conv import TaskInputConv
from .layer import MTUFeedForward


@torch.no_grad()
def fold(model, task: str) -> UNet2DConditionModel:
    """Returns a stock `UNet2DConditionModel` whose output equals `model`'s for `task`.

    Each MTU layer's router-weighted experts become one dense FFN of the original width (inactive width padded
    with silent units), the task LayerNorm's affine is folded into the first projection (so `norm3` becomes
    weight 1, bias 0), and the task's input conv becomes `conv_in`. Parameter count and FLOPs are the base
    architecture's (input channels aside). It loads with `UNet2DConditionModel.from_pretrained`, no mtu needed.
    """
    index = model.task_index(task)
    owned = [name for name, _ in model.mtu_modules()]
    state = {key: value for key, value in model.unet.state_dict().items()
             if not any(key.startswith(prefix + ".") for prefix in owned)}
    for name, module in model.mtu_modules():
        if isinstance(module, MTUFeedForward):
            expert_weights = module.router(model.task_embeddings)
            for key, value in module.folded_state(index, expert_weights).items():
                state[f"{name}.{key}"] = value
            block = name.removesuffix(".ff")
            ones = torch.ones(module.dim, dtype=value.dtype, device=value.device)
            state[f"{block}.norm3.weight"], state[f"{block}.norm3.bias"] = ones, torch.zeros_like(ones)
        elif isinstance(module, TaskInputConv):
            conv = module.convs[task]
            state[f"{name}.weight"] = conv.weight
            if conv.bias is not None:
                state[f"{name}.bias"] = conv.bias
    config = dict(model.unet.config)
    config["in_channels"] = model.task_in_channels(task)
    with torch.device("meta"):
        folded = UNet2DConditionModel.from_config(config)
    expected = folded.state_dict().keys()  # a base norm3 without affine has no weight/bias to write
    state = {k: v for k, v in state.items() if k in expected or ".norm3." not in k}
    folded.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True, assign=True)
    folded.train(model.training)
    return folded


def is_folded_unet(folder: Path) -> bool:
    """True for a folder `mtu fold` wrote before outputs were marked: a diffusers UNet's config.json and
    diffusion_pytorch_model.safetensors, and nothing else."""
    if {entry.name for entry in Path(folder).iterdir()} != {"config.json", "diffusion_pytorch_model.safetensors"}:
        return False
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("_class_name") == "UNet2DConditionModel"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
