"""Realistic tiny base folders built in code, as users have them: a StableDiffusionPipeline folder with a safety
checker and its CLIPImageProcessor feature extractor (`requires_safety_checker: true`), a copy holding only
`variant="fp16"` weights, and an SDXL pipeline folder. Paths are the caller's (give them spaces).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor

from .diffusers_parts import tiny_components
from .sdxl_parts import tiny_sdxl_components

IMAGE_SIZE = 16  # the tiny VAE's images (8x8 latents)


def tiny_safety_checker(flag_everything: bool = False, seed: int = 0) -> StableDiffusionSafetyChecker:
    """diffusers' `StableDiffusionSafetyChecker` over a 2-layer CLIP vision tower at 16x16. Its concept thresholds
    are 1 (a cosine never exceeds them: nothing is flagged); `flag_everything` sets them to -1 (everything is)."""
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                       "image_size": IMAGE_SIZE, "patch_size": 4},
        projection_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        checker = StableDiffusionSafetyChecker(config).eval()
    if flag_everything:
        with torch.no_grad():
            checker.concept_embeds_weights.fill_(-1.0)
    return checker


def tiny_feature_extractor() -> CLIPImageProcessor:
    """The safety checker's image processor, at its 16x16 input size."""
    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE,
                                                                             "width": IMAGE_SIZE})


def save_sd_folder(folder: Path, unet, *, safety_checker: bool = True, flag_everything: bool = False) -> Path:
    """A `StableDiffusionPipeline` folder around `unet`, with a safety checker and feature extractor (and
    `requires_safety_checker: true`) unless `safety_checker` is False."""
    components = tiny_components(unet, folder.parent / f".{folder.name}-tokenizer")
    if safety_checker:
        components.update(safety_checker=tiny_safety_checker(flag_everything), requires_safety_checker=True,
                          feature_extractor=tiny_feature_extractor())
    StableDiffusionPipeline(**components).save_pretrained(folder)
    return folder


def save_fp16_variant_copy(source: Path, folder: Path) -> Path:
    """A copy of the pipeline folder `source` that holds only `*.fp16.safetensors` weights (as many hub repos'
    fp16 branches), written by diffusers' own `save_pretrained(variant="fp16")`."""
    pipe = StableDiffusionPipeline.from_pretrained(source).to(torch.float16)
    pipe.save_pretrained(folder, variant="fp16")
    plain = [path for path in folder.rglob("*.safetensors") if ".fp16." not in path.name]
    assert not plain and any(folder.rglob("*.fp16.safetensors")), plain
    return folder


def save_sdxl_folder(folder: Path, unet) -> Path:
    """A `StableDiffusionXLPipeline` folder around `unet` (no watermarker, as diffusers without that extra)."""
    components = tiny_sdxl_components(unet, folder.parent / f".{folder.name}-tokenizer")
    StableDiffusionXLPipeline(**components, add_watermarker=False).save_pretrained(folder)
    return folder
