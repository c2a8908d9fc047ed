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
    conv_name, convs = input_conv(model)
    return stock_unet(model, folded_ffns(model, model.task_index(task)), conv_name, convs.convs[task], share=False)


def input_conv(model) -> tuple[str, TaskInputConv]:
    """(name, module) of the model's `TaskInputConv`."""
    return next((name, module) for name, module in model.mtu_modules() if isinstance(module, TaskInputConv))


def folded_ffns(model, index: int) -> dict[str, dict[str, torch.Tensor]]:
    """{upcycled block's FFN name: the task's folded FFN tensors (`MTUFeedForward.folded_state`)} for task `index`."""
    return {name: module.folded_state(index, module.router(model.task_embeddings))
            for name, module in model.mtu_modules() if isinstance(module, MTUFeedForward)}


@torch.no_grad()
def stock_unet(model, ffns: dict[str, dict[str, torch.Tensor]], conv_name: str, conv: torch.nn.Conv2d, *,
               share: bool) -> UNet2DConditionModel:
    """A stock UNet of the base architecture: `model`'s tensors outside its MTU parts, `ffns` (`folded_ffns`' form)
    as its upcycled blocks' FFNs (each block's `norm3` the identity: the task LayerNorm's affine is in the FFN) and
    `conv` as its input conv (`conv_name`).

    Args:
        share: True: the UNet holds those very tensors (no copy; frozen), as `mtu.export.TaskSwitchingUNet` needs;
            False: copies (`fold`: a model of its own, trainable as any diffusers UNet).
    """
    owned = [name for name, _ in model.mtu_modules()]
    state = {key: value for key, value in model.unet.state_dict().items()
             if not any(key.startswith(prefix + ".") for prefix in owned)}
    for name, ffn in ffns.items():
        state.update({f"{name}.{key}": value for key, value in ffn.items()})
        block, value = name.removesuffix(".ff"), next(iter(ffn.values()))
        ones = torch.ones(model.unet.get_submodule(name).dim, dtype=value.dtype, device=value.device)
        state[f"{block}.norm3.weight"], state[f"{block}.norm3.bias"] = ones, torch.zeros_like(ones)
    state[f"{conv_name}.weight"] = conv.weight
    if conv.bias is not None:
        state[f"{conv_name}.bias"] = conv.bias
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config({**model.unet.config, "in_channels": conv.in_channels})
    expected = unet.state_dict().keys()  # a base norm3 without affine has no weight/bias to write
    state = {key: value for key, value in state.items() if key in expected or ".norm3." not in key}
    if not share:
        state = {key: value.detach().clone() for key, value in state.items()}
    unet.load_state_dict(state, strict=True, assign=True)  # assign: these tensors themselves
    if share:
        unet.requires_grad_(False)
    return unet.train(model.training)


def is_folded_unet(folder: Path) -> bool:
    """True for a folder `mtu fold` wrote before outputs were marked: a diffusers UNet's config.json and
    diffusion_pytorch_model.safetensors, and nothing else."""
    if {entry.name for entry in Path(folder).iterdir()} != {"config.json", "diffusion_pytorch_model.safetensors"}:
        return False
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("_class_name") == "UNet2DConditionModel"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
