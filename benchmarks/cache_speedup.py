"""Training step time from the latent cache vs encoding with the VAE on the fly, SD1.5-shaped parts at random init.

    python benchmarks/cache_speedup.py [--resolution 256] [--steps 5]

Builds a pipeline folder with SD1.5's UNet, VAE and CLIP ViT-L/14 text-encoder architectures (random weights,
byte-level tokenizer; no download), one t2i and one edit source of random images, and times MTU training steps
(N=4, batch 1) encoding on the fly, then from a cache made with `mtu cache` (latents only, and latents + text).
Both modes run in this one process, one after the other; the table reports medians after 2 warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mtu.architectures import build_unet  # noqa: E402
from mtu.training import Trainer, config_from_dict  # noqa: E402
from mtu.training.cache import build_cache  # noqa: E402
from tests.diffusers_parts import tiny_tokenizer  # noqa: E402  (byte-level CLIP tokenizer built offline)

SD15_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215}
SD15_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
             "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "projection_dim": 768}


def build_pipeline(root: Path) -> Path:
    folder = root / "sd15-random"
    torch.manual_seed(0)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = StableDiffusionPipeline(vae=AutoencoderKL(**SD15_VAE), text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT)),
                                   tokenizer=tiny_tokenizer(root), unet=build_unet("sd15", seed=0), scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def write_sources(root: Path, resolution: int, count: int = 8) -> list[dict]:
    rng = np.random.default_rng(0)
    folders = {"t2i": root / "t2i", "edit": root / "edit"}
    for folder in folders.values():
        folder.mkdir()
    with open(folders["t2i"] / "metadata.jsonl", "w") as t2i, open(folders["edit"] / "metadata.jsonl", "w") as edit:
        for i in range(count):
            for name in ("a", "b"):
                pixels = rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folders["edit"] / f"{i}{name}.png")
            Image.open(folders["edit"] / f"{i}a.png").save(folders["t2i"] / f"{i}.png")
            t2i.write(json.dumps({"image": f"{i}.png", "text": f"a photo number {i}"}) + "\n")
            edit.write(json.dumps({"original_image": f"{i}a.png", "edited_image": f"{i}b.png",
                                   "edit_prompt": f"make it number {i}"}) + "\n")
    return [{"task": "t2i", "format": "folder", "path": str(folders["t2i"]), "schema": "captions",
             "resolution": resolution},
            {"task": "edit", "format": "folder", "path": str(folders["edit"]), "schema": "instructpix2pix",
             "resolution": resolution}]


def time_steps(config: dict, steps: int) -> list[float]:
    trainer = Trainer(config_from_dict(config))
    times = []
    for index in range(steps + 2):
        start = time.perf_counter()
        trainer.train_step()
        if index >= 2:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = build_pipeline(root)
        config = {"model": {"base": str(base), "mtu": {"num_experts": 4}}, "data": write_sources(root, args.resolution),
                  "max_steps": args.steps + 2, "batch_size": 1, "checkpoint_every": 0, "log_with": "none"}
        rows = {"on the fly": (time_steps({**config, "output_dir": str(root / "plain")}, args.steps), None)}
        for text in (False, True):
            cache = root / f"cache-{text}"
            start = time.perf_counter()
            build_cache(config_from_dict({**config, "output_dir": str(root / "x")}), cache, text=text)
            built = time.perf_counter() - start
            name = "cache: latents + text" if text else "cache: latents"
            rows[name] = (time_steps({**config, "output_dir": str(root / name[-4:]), "cache_dir": str(cache)},
                                     args.steps), built)
    base_median = statistics.median(rows["on the fly"][0])
    print(f"SD1.5-shaped UNet/VAE/CLIP-L at random init, MTU N=4, batch 1, {args.resolution}px "
          f"({args.resolution // 8}x{args.resolution // 8} latents), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.steps} steps after 2 warm-ups")
    print("| data path | median step s | min | max | speed-up vs on the fly | cache build s (8 t2i + 8 edit samples) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (times, built) in rows.items():
        median = statistics.median(times)
        print(f"| {name} | {median:.2f} | {min(times):.2f} | {max(times):.2f} | {base_median / median:.2f}x | "
              f"{'-' if built is None else f'{built:.1f}'} |")


if __name__ == "__main__":
    main()
