"""What a run trains: MTU (the paper) or a baseline (full fine-tuning, LoRA, IA3 via peft; Tables 2-3).

Every method gets task-specific input convolutions (a `TaskInputConv`), so single- and multi-task baselines take
the same inputs as MTU; the model is always called as `model(sample, t, text, task=...)`.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from ..upcycling import MTUConfig, MTUModel, load_mtu, upcycle
from ..upcycling.input_conv import TaskInputConv
from ..upcycling.model import base_unet_config
from ..upcycling.tasks import get_task
from .config import ModelConfig

FFN_TARGETS = [r".*\.ff\.net\.0\.proj", r".*\.ff\.net\.2"]
ATTENTION_TARGETS = [r".*\.attn[12]\.to_[kv]"]


def _task_conv_model(unet: UNet2DConditionModel, tasks: list[str], base: str) -> MTUModel:
    """The UNet with one input conv per task and no experts: the frame the baselines train in."""
    specs = [get_task(name) for name in tasks]
    unet.conv_in = TaskInputConv(unet.conv_in, specs)
    info = {"name_or_path": base, "fingerprint": None, "unet_config": base_unet_config(unet)}
    config = MTUConfig(tasks=tasks, num_experts=1, granularity=1.0)
    model = MTUModel(unet, config, specs, info, torch.zeros(len(specs), 1))
    model.requires_grad_(False)
    unet.conv_in.requires_grad_(True)
    return model


def _regex_targets(patterns: list[str]) -> str:
    return "(" + "|".join(patterns) + ")$"


def build_model(unet: UNet2DConditionModel, config: ModelConfig, tasks: list[str]) -> MTUModel:
    """The trainable model for `config.method`; frozen parts have requires_grad False."""
    if config.method == "mtu":
        if config.adapter:
            return load_mtu(config.adapter, base=unet)
        return upcycle(unet, MTUConfig(tasks=tasks, **config.mtu), base_name_or_path=config.base)
    model = _task_conv_model(unet, tasks, config.base)
    if config.method == "full":
        unet.requires_grad_(True)
        return model
    from peft import IA3Config, LoraConfig, inject_adapter_in_model

    if config.method == "lora":
        adapter = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank,
                             target_modules=_regex_targets(FFN_TARGETS), init_lora_weights=True)
    elif config.method == "ia3":
        targets = FFN_TARGETS + (ATTENTION_TARGETS if config.ia3_on_attention else [])
        adapter = IA3Config(target_modules=_regex_targets(targets),
                            feedforward_modules=_regex_targets([FFN_TARGETS[1]]))
    else:
        raise ValueError(f"`model.method` must be one of mtu, full, lora, ia3, got {config.method!r}.")
    inject_adapter_in_model(adapter, unet)
    for name, param in unet.named_parameters():
        param.requires_grad_(("lora_" in name or "ia3_" in name) or name.startswith("conv_in."))
    return model


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter of everything the optimizer updates, in a stable order."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}
