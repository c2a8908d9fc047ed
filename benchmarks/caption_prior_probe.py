"""What a toy base draws for a text that names only some of a scene's shapes (issue 11's edit diagnosis).

Edit instructions name one shape ("remove the square") and leave the others unsaid. A base pre-trained only on
complete captions (every shape, then the background) has learnt that a shape the text does not name is absent;
this probe measures that prior. For each of `--count` held-out scenes with at least two shapes, the prompt is the
first shape's full description alone (e.g. "a large red circle at the top left", no background), and the oracle
parses the base's text-to-image output (20 steps, guidance 7.5, SD1.5's defaults):

- *named drawn*: the named shape is in the output with all its attributes;
- *shapes*: mean number of shapes in the output; *two or more*: share of outputs with at least two shapes.
  Scenes in the toy world hold 1-3 shapes (uniformly), so a base that reads the text as a partial description
  draws other shapes about as often as scenes hold them (2/3 of scenes that hold the named shape have others);
  one that reads it as complete draws none.

    python benchmarks/caption_prior_probe.py --bases BASE1,BASE2 --count 128
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def probe(base: str, count: int, seed: int) -> dict:
    from diffusers import StableDiffusionPipeline

    from mtu.stats import summarize_rate
    from mtu.toyworld.oracle import try_parse
    from mtu.toyworld.scene import heldout_scenes

    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    scenes = [scene for scene in heldout_scenes(4 * count) if len(scene.shapes) >= 2][:count]
    named = [scene.shapes[0] for scene in scenes]
    prompts = [shape.describe() for shape in named]
    images = []
    for start in range(0, count, 32):
        generators = [torch.Generator().manual_seed(seed * 100_003 + i) for i in range(start, min(start + 32, count))]
        images += pipe(prompts[start:start + 32], num_inference_steps=20, guidance_scale=7.5, height=32, width=32,
                       generator=generators).images
    parsed = [try_parse(image) for image in images]
    drawn = [p is not None and shape in p.shapes for p, shape in zip(parsed, named)]
    counts = [len(p.shapes) if p is not None else 0 for p in parsed]
    extra = [count >= 2 for count in counts]
    return {"base": base, "count": count, "named_drawn": summarize_rate(drawn), "shapes": float(np.mean(counts)),
            "extra": summarize_rate(extra)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bases", default="", help="comma-separated base pipeline folders (default: the shipped)")
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be >= 1, got {args.count}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from mtu.toyworld.components import shipped_base

    bases = [base for base in args.bases.split(",") if base] or [str(shipped_base())]
    print("| base | named shape drawn (95% CI) | shapes per output | two or more shapes (95% CI) |")
    print("|---|---|---:|---|")
    for base in bases:
        row = probe(base, args.count, args.seed)
        rate = "{value:.3f} ({low:.3f}-{high:.3f})"
        print(f"| {base} | {rate.format(**row['named_drawn'])} | {row['shapes']:.2f} | "
              f"{rate.format(**row['extra'])} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
