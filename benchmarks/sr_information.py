"""Does the toy world's super-resolution input determine the scene? (issue 11, the SR suspect)

For held-out scenes, each degradation setting makes the low-resolution (LR) input as the training data does
(`mtu.data.degradation.degrade`, seeded per scene) and asks two questions:

- oracle: does `oracle.parse_scene` read the right scene from the LR input upsampled bicubically to the output
  size? (a sufficient test: a crisp-image parser on a blurry image under-reads, so this is a lower bound);
- decodable: among the scene and every scene that differs from it in one attribute (one shape's kind, colour,
  size or cell, or the background), is the true scene's template nearest (L2) to the LR input? The templates
  are the candidates blurred and downscaled with the same draws as the input, without noise or JPEG, i.e. a
  decoder that knows the blur kernel. A scene that loses to a neighbour here cannot be recovered reliably by any
  model, so this bounds SR's scene read-back from above (up to the decoder's knowledge of the kernel).

    python benchmarks/sr_information.py [--count 150]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from mtu.data import degradation
from mtu.data.degradation import DegradationConfig
from mtu.toyworld.oracle import scene_matches
from mtu.toyworld.scene import BACKGROUND_COLOURS, KINDS, SHAPE_COLOURS, SIZES, Scene, heldout_scenes, render_array
from mtu.toyworld.tasks import TOY_DEGRADATION

NO_NOISE = {"noise_sigma": (0.0, 0.0), "poisson_scale": (0.0, 0.0)}
SETTINGS = {
    "toy (JPEG 4:4:4)": TOY_DEGRADATION,
    "toy, JPEG 4:2:0 (before issue 11)": replace(TOY_DEGRADATION, jpeg_subsampling="4:2:0"),
    "toy, 4:2:0, no noise": replace(TOY_DEGRADATION, jpeg_subsampling="4:2:0", **NO_NOISE),
    "toy, 4:2:0, no blur": replace(TOY_DEGRADATION, jpeg_subsampling="4:2:0", blur_kernel_size=(1, 1),
                                   blur_sigma=(1e-3, 1e-3)),
    "downscale, JPEG 4:2:0 at quality 100": DegradationConfig(
        blur_kernel_size=(1, 1), blur_sigma=(1e-3, 1e-3), jpeg_quality=(100, 100), **NO_NOISE),
    "downscale, JPEG 4:4:4 at quality 100": DegradationConfig(
        blur_kernel_size=(1, 1), blur_sigma=(1e-3, 1e-3), jpeg_quality=(100, 100), jpeg_subsampling="4:4:4",
        **NO_NOISE),
}


def neighbours(scene: Scene) -> list[Scene]:
    """Every valid scene that differs from `scene` in exactly one attribute."""
    found = []
    for index, shape in enumerate(scene.shapes):
        others = scene.shapes[:index] + scene.shapes[index + 1:]
        changed = [replace(shape, kind=kind) for kind in KINDS if kind != shape.kind]
        changed += [replace(shape, colour=c) for c in SHAPE_COLOURS if c not in (shape.colour, scene.background)]
        changed += [replace(shape, size=size) for size in SIZES if size != shape.size]
        changed += [replace(shape, position=cell) for cell in scene.free_positions()]
        found += [Scene(scene.background, others + (new,)) for new in changed]
    found += [Scene(colour, scene.shapes) for colour in BACKGROUND_COLOURS
              if colour != scene.background and all(shape.colour != colour for shape in scene.shapes)]
    return found


def _tensor(scene: Scene, size: int) -> torch.Tensor:
    return torch.from_numpy(render_array(scene, size)).permute(2, 0, 1).float() / 255  # (3, size, size)


def _template(scene: Scene, size: int, seed: int, config: DegradationConfig, scale: int) -> torch.Tensor:
    # Blur and downscale draw first from the generator, so the same seed repeats the input's kernel and mode.
    generator = torch.Generator().manual_seed(seed)
    blurred = degradation._blur(_tensor(scene, size), config, generator)
    return degradation._downscale(blurred, scale, config, generator)


def measure(config: DegradationConfig, size: int, count: int, scale: int = 2) -> dict[str, float]:
    oracle, decodable = [], []
    for seed, scene in enumerate(heldout_scenes(count)):
        low = degradation.degrade(_tensor(scene, size), scale, torch.Generator().manual_seed(seed), config)
        array = (low.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        upsampled = Image.fromarray(array).resize((size, size), Image.BICUBIC)
        oracle.append(scene_matches(upsampled, scene))
        distances = [float(((_template(candidate, size, seed, config, scale) - low) ** 2).sum())
                     for candidate in [scene] + neighbours(scene)]
        decodable.append(int(np.argmin(distances)) == 0)
    return {"oracle": float(np.mean(oracle)), "decodable": float(np.mean(decodable))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=150, help="held-out scenes per cell")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| degradation | LR -> HR | oracle reads LR (bicubic up) | decodable among 1-attribute neighbours |")
    print("|---|---|---:|---:|")
    for name, config in SETTINGS.items():
        for size in (32, 64):
            row = measure(config, size, args.count)
            print(f"| {name} | {size // 2} -> {size} | {row['oracle']:.3f} | {row['decodable']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
