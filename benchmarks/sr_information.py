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
    python benchmarks/sr_information.py --latent [--count 256] [--model toyworld]

`--latent` asks the second question again, on the held-out sr examples' own inputs, where the model reads them: the
SR condition channels, i.e. the LR image upsampled bicubically to the output size and VAE-encoded (the shipped
base's VAE through `mtu.conditioning.condition_channels`, as in training and sampling), input and templates
alike, for the toy degradation at 16 -> 32. Beside the whole neighbourhood it asks it for the small circle / square
swaps alone (the shipped model's SR read-back failures, docs/DIAGNOSIS.md): among the scene and the scenes with one
small circle made a square or one small square a circle, is the true one nearest? In pixels and in the condition
latents, on the same scenes: if the latents lose what the pixels keep, the conditioning path, not the training,
bounds the read-back. `--model` splits that model's read-back of the same examples (its recorded sampling) by
whether their latents decode.
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


def small_swaps(scene: Scene) -> list[Scene]:
    """The scenes with one small circle made a square or one small square made a circle."""
    swap = {"circle": "square", "square": "circle"}
    return [Scene(scene.background, scene.shapes[:index] + (replace(shape, kind=swap[shape.kind]),)
                  + scene.shapes[index + 1:])
            for index, shape in enumerate(scene.shapes) if shape.size == "small" and shape.kind in swap]


def measure_latent(examples, size: int = 32, scale: int = 2, upsample: str = "bicubic") -> dict[str, list[bool]]:
    """Nearest-template decoding of held-out SR examples' own inputs in pixels and in the condition latents (module
    docstring), per example: "pixels", "latents" (the whole neighbourhood); "pixels_swaps", "latents_swaps" (the
    small circle / square swaps alone; None for an example without a small circle or square). `examples`:
    `evaluation_set("sr", n)`, whose example i was degraded with the seed EVAL_SEED + i (`tasks.sr.heldout_example`),
    so the templates repeat its blur and downscale. `upsample`: the mode that brings the LR image to the output
    size before the VAE (bicubic: `mtu.conditioning.upsample_for_sr`, what training and sampling use)."""
    from diffusers import AutoencoderKL

    from mtu.conditioning import condition_channels, upsample_for_sr
    from mtu.shipped import shipped_base
    from mtu.toyworld.evaluate import EVAL_SEED
    from mtu.upcycling.tasks import get_task

    vae = AutoencoderKL.from_pretrained(shipped_base(), subfolder="vae").eval()
    config, spec = TOY_DEGRADATION, get_task("sr")

    def latents(lows: torch.Tensor) -> torch.Tensor:  # (B, 3, h, w) in [0, 1] -> the condition channels
        pixels = lows * 2 - 1
        if upsample == "bicubic":
            pixels = upsample_for_sr(pixels, (size, size))
        else:
            pixels = torch.nn.functional.interpolate(pixels, size=(size, size), mode=upsample).clamp(-1, 1)
        with torch.no_grad():
            return condition_channels(vae, spec, pixels)

    def nearest_is_first(templates: torch.Tensor, target: torch.Tensor) -> bool:
        return int(((templates - target) ** 2).flatten(1).sum(1).argmin()) == 0

    found: dict[str, list] = {key: [] for key in ("pixels", "latents", "pixels_swaps", "latents_swaps")}
    for index, example in enumerate(examples):
        scene, seed = example.target_scene, EVAL_SEED + index
        low = torch.from_numpy(np.asarray(example.image, dtype=np.float32) / 255).permute(2, 0, 1)
        encoded_low = latents(low[None])[0]
        for key, pool in (("", [scene] + neighbours(scene)), ("_swaps", [scene] + small_swaps(scene))):
            if len(pool) == 1:  # no small circle or square to swap
                found["pixels" + key].append(None)
                found["latents" + key].append(None)
                continue
            templates = torch.stack([_template(candidate, size, seed, config, scale) for candidate in pool])
            found["pixels" + key].append(nearest_is_first(templates, low))
            found["latents" + key].append(nearest_is_first(latents(templates), encoded_low))
    return found


def model_read_back(model: str, examples, seed: int = 0) -> list[bool]:
    """Whether the oracle reads each example's output of `model` (sr, its recorded sampling) as the scene."""
    from mtu.pipelines import MTUPipeline
    from mtu.toyworld.evaluate import generate_outputs, score_examples

    pipe = MTUPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        outputs = generate_outputs(pipe, examples, seed)
    return [bool(record["read_back"]) for record in score_examples(examples, outputs, seed)["records"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=150, help="held-out scenes per cell")
    parser.add_argument("--model", default=None,
                        help="with --latent: also this model's read-back of the same examples (e.g. toyworld)")
    parser.add_argument("--seed", type=int, default=0, help="with --model: the sampling noise's seed")
    parser.add_argument("--upsample", default="bicubic", choices=("bicubic", "bilinear", "nearest"),
                        help="with --latent: how the LR image reaches the output size before the VAE (the model's "
                             "is bicubic)")
    parser.add_argument("--latent", action="store_true",
                        help="the toy degradation in pixels and in the SR condition latents (module docstring)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count {args.count}: must be 1 or more")
    if args.model and not args.latent:
        parser.error(f"--model {args.model}: only with --latent")
    torch.set_num_threads(1)
    if args.latent:
        from mtu.stats import paired_difference, wilson_interval
        from mtu.toyworld.evaluate import evaluation_set
        from mtu.toyworld.metrics import paired_cells

        examples = evaluation_set("sr", args.count)
        found = measure_latent(examples, upsample=args.upsample)

        def rate(values):
            values = [value for value in values if value is not None]
            low, high = wilson_interval(sum(values), len(values))
            return f"{np.mean(values):.3f} ({low:.3f}-{high:.3f})", len(values)

        swaps = rate(found["pixels_swaps"])[1]
        print(f"| decoded from | decodable among 1-attribute neighbours, {args.count} examples (95% CI) | against "
              f"the small circle / square swaps alone, {swaps} examples (95% CI) |")
        print("|---|---|---|")
        for space, name in (("pixels", "LR input"), ("latents", f"condition latents ({args.upsample} up, VAE mode)")):
            print(f"| {name} | {rate(found[space])[0]} | {rate(found[space + '_swaps'])[0]} |")
        print("\n| test | latents - pixels, same examples (95% CI) | only latents / only pixels | McNemar p |")
        print("|---|---|---|---:|")
        for key, name in (("", "1-attribute neighbours"), ("_swaps", "small circle / square swaps")):
            pairs = [(a, b) for a, b in zip(found["latents" + key], found["pixels" + key]) if a is not None]
            result = paired_difference(np.array([a for a, _ in pairs]), np.array([b for _, b in pairs]))
            print(f"| {name} | {paired_cells(result)} |", flush=True)
        if args.model:
            read = model_read_back(args.model, examples, args.seed)
            print(f"\n{args.model}: scenes read back from its sr outputs, by whether the condition latents decode "
                  f"(1-attribute neighbours)\n")
            print("| latents decode | examples | model reads the scene back (95% CI) |")
            print("|---|---:|---|")
            for decodes in (True, False, None):
                chosen = [r for r, d in zip(read, found["latents"]) if decodes is None or d == decodes]
                label = {True: "yes", False: "no", None: "all"}[decodes]
                print(f"| {label} | {len(chosen)} | {rate(chosen)[0] if chosen else '-'} |", flush=True)
        return 0
    print("| degradation | LR -> HR | oracle reads LR (bicubic up) | decodable among 1-attribute neighbours |")
    print("|---|---|---:|---:|")
    for name, config in SETTINGS.items():
        for size in (32, 64):
            row = measure(config, size, args.count)
            print(f"| {name} | {size // 2} -> {size} | {row['oracle']:.3f} | {row['decodable']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
