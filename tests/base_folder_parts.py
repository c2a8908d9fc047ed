"""Base model folders as users have them, built in code at tiny sizes (no hub): a Stable Diffusion pipeline folder with
a safety checker and feature extractor, a copy holding only `variant="fp16"` weights, and a single-file checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPImageProcessor

from mtu.architectures import build_unet

from .diffusers_parts import tiny_components

TINY_CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}


def tiny_safety_checker(seed: int = 0) -> StableDiffusionSafetyChecker:
    """A `StableDiffusionSafetyChecker` over a 2-layer, 32-wide CLIP (32x32 images in 4x4 patches)."""
    config = CLIPConfig(text_config={**TINY_CLIP, "vocab_size": 100},
                        vision_config={**TINY_CLIP, "image_size": 32, "patch_size": 4}, projection_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return StableDiffusionSafetyChecker(config).eval()


def sd_pipeline(root: Path) -> StableDiffusionPipeline:
    """A tiny `StableDiffusionPipeline` with a safety checker and feature extractor, as SD 1.5 ships."""
    components = tiny_components(build_unet("tiny", seed=0), Path(root))
    components.update(safety_checker=tiny_safety_checker(), feature_extractor=CLIPImageProcessor(crop_size=32, size=32),
                      requires_safety_checker=True)
    return StableDiffusionPipeline(**components)


def write_base_folders(root: Path) -> dict[str, Path]:
    """Under `root` (whose path has spaces): "sd base" (the pipeline, float32), "fp16 only" (the same pipeline with
    only `*.fp16.safetensors` weights, as many hub repos hold), "unet.safetensors" (its UNet as one file)."""
    root = Path(root)
    pipe = sd_pipeline(root)
    folders = {"sd": root / "sd base", "fp16": root / "fp16 only", "single_file": root / "unet.safetensors"}
    pipe.save_pretrained(folders["sd"], safe_serialization=True)
    save_file({name: tensor.contiguous() for name, tensor in pipe.unet.state_dict().items()},
              str(folders["single_file"]))
    pipe.to(torch.float16).save_pretrained(folders["fp16"], safe_serialization=True, variant="fp16")
    return folders


def nudged_copy(folder: Path, out: Path, scale: float = 0.01) -> Path:
    """A UNet folder like the pipeline `folder`'s UNet with one weight moved by `scale`: another base."""
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    with torch.no_grad():
        unet.conv_in.weight.view(-1)[0] += scale
    unet.save_pretrained(out, safe_serialization=True)
    return Path(out)
