"""Parameter and FLOP accounting for base vs MTU (unfolded and folded), on the meta device (shapes only).

FLOPs are counted with `torch.utils.flop_counter` (matmuls, convolutions and attention; elementwise ops are not
counted), for one forward of batch 1 at a given latent size.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from .upcycling import MTUConfig, MTUModel, fold, upcycle
from .upcycling.input_conv import TaskInputConv

COMPONENTS = ("experts", "task_layernorms", "routers", "task_embeddings", "task_input_convs")


def unet_inputs(unet_config: dict, latent_size: tuple[int, int], in_channels: int | None = None,
                batch_size: int = 1, device="cpu", dtype=torch.float32, text_length: int = 77) -> dict:
    """Dummy inputs of the right shapes for a `UNet2DConditionModel` of this config (SDXL's extra conditions too)."""
    height, width = latent_size
    channels = in_channels or unet_config["in_channels"]
    inputs = {
        "sample": torch.randn(batch_size, channels, height, width, device=device, dtype=dtype),
        "timestep": torch.full((batch_size,), 500, device=device),
        "encoder_hidden_states": torch.randn(batch_size, text_length, unet_config["cross_attention_dim"],
                                             device=device, dtype=dtype),
    }
    if unet_config.get("addition_embed_type") == "text_time":
        time_dims = 6 * unet_config["addition_time_embed_dim"]
        text_dims = unet_config["projection_class_embeddings_input_dim"] - time_dims
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch_size, text_dims, device=device, dtype=dtype),
            "time_ids": torch.randn(batch_size, 6, device=device, dtype=dtype),
        }
    return inputs


def count_flops(module: torch.nn.Module, inputs: dict, **extra) -> int:
    """FLOPs of one forward of `module(**inputs, **extra)`."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(**inputs, **extra)
    return counter.get_total_flops()


def parameter_breakdown(model: MTUModel) -> dict[str, int]:
    """Parameters per MTU component, the frozen rest, and totals."""
    counts = dict.fromkeys(COMPONENTS, 0)
    counts["task_embeddings"] = model.task_embeddings.numel()
    for name, param in model.mtu_named_parameters():
        if name == "task_embeddings":
            continue
        leaf = name.rsplit(".", 1)[-1]
        if ".conv_in." in name or name.startswith("unet.conv_in."):
            counts["task_input_convs"] += param.numel()
        elif ".router." in name:
            counts["routers"] += param.numel()
        elif leaf in ("ln_weight", "ln_bias"):
            counts["task_layernorms"] += param.numel()
        else:
            counts["experts"] += param.numel()
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["frozen"] = counts["total"] - counts["trainable"]
    return counts


def _num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _ffn_params(unet: UNet2DConditionModel) -> int:
    from diffusers.models.attention import BasicTransformerBlock

    return sum(_num_params(m.ff) for m in unet.modules() if isinstance(m, BasicTransformerBlock))


def cost_report(config: MTUConfig, unet_config: dict, latent_size: tuple[int, int] = (64, 64),
                tasks: list[str] | None = None) -> dict:
    """Parameters and FLOPs of base, MTU (unfolded) and folded models, per task, built on the meta device.

    Args:
        config: The MTU config.
        unet_config: The base UNet's diffusers config.
        latent_size: (h, w) of the latents (64x64 for SD1.5 at 512 px, 128x128 for SDXL at 1024 px).
        tasks: Tasks to report; default all of the config's.
    """
    with torch.device("meta"):
        base = UNet2DConditionModel.from_config(unet_config)
    blocks = sum(1 for m in base.modules() if type(m).__name__ == "BasicTransformerBlock")
    report = {"latent_size": list(latent_size), "base": {"parameters": _num_params(base), "transformer_blocks": blocks,
                                                        "ffn_parameters": _ffn_params(base)}}
    model = upcycle(base, config, fingerprint=False)
    report["mtu"] = {"parameters": parameter_breakdown(model), "upcycled_blocks": sum(
        1 for _, m in model.mtu_modules() if not isinstance(m, TaskInputConv))}
    report["tasks"] = {}
    for task in tasks or config.tasks:
        channels = model.task_in_channels(task)
        with torch.device("meta"):
            stock = UNet2DConditionModel.from_config({**unet_config, "in_channels": channels})
        inputs = unet_inputs(unet_config, latent_size, channels, device="meta")
        folded = fold(model, task)
        report["tasks"][task] = {
            "in_channels": channels,
            "base_parameters": _num_params(stock),
            "folded_parameters": _num_params(folded),
            "base_flops": count_flops(stock, inputs),
            "mtu_flops": count_flops(model, inputs, task=task),
            "folded_flops": count_flops(folded, inputs),
        }
    return report


def format_report(report: dict) -> str:
    """The cost report as a plain-text table."""
    base, mtu = report["base"], report["mtu"]["parameters"]
    lines = [
        f"base: {base['parameters']:,} parameters, {base['transformer_blocks']} transformer blocks, "
        f"{base['ffn_parameters']:,} FFN parameters",
        f"MTU:  {mtu['total']:,} parameters ({mtu['total'] / base['parameters']:.4f}x base), "
        f"{mtu['trainable']:,} trainable, {report['mtu']['upcycled_blocks']} blocks upcycled",
        "      " + ", ".join(f"{name} {mtu[name]:,}" for name in COMPONENTS),
        f"FLOPs per forward, batch 1, latents {report['latent_size'][0]}x{report['latent_size'][1]}:",
        f"  {'task':<14}{'in_ch':>6}{'base GFLOPs':>14}{'MTU':>12}{'folded':>12}{'MTU/base':>10}"
        f"{'folded/base':>13}{'folded params':>16}",
    ]
    for task, row in report["tasks"].items():
        lines.append(
            f"  {task:<14}{row['in_channels']:>6}{row['base_flops'] / 1e9:>14.2f}{row['mtu_flops'] / 1e9:>12.2f}"
            f"{row['folded_flops'] / 1e9:>12.2f}{row['mtu_flops'] / row['base_flops']:>10.4f}"
            f"{row['folded_flops'] / row['base_flops']:>13.4f}{row['folded_parameters']:>16,}"
        )
    return "\n".join(lines)
