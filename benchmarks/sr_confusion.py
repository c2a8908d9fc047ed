"""Which shapes a model's super-resolved outputs get wrong (issue 11: sr's scene read back): on validation scenes,
shape by shape (matched by grid cell), the true kind and size against what the oracle reads, for the model's
output, the bicubic upsampled input and the high-resolution target through the VAE (encode, mode, decode: what any
latent model could at best return). With --schedulers, the model's read-back again under each sampler named.

    OMP_NUM_THREADS=1 python benchmarks/sr_confusion.py [--model toyworld] [--count 256]
        [--schedulers EulerDiscreteScheduler,DDIMScheduler]
"""
import argparse
import collections

import diffusers
import numpy as np
import torch
from PIL import Image

from mtu.pipelines import MTUPipeline
from mtu.toyworld.evaluate import evaluation_set, generate_outputs
from mtu.toyworld.oracle import try_parse


def vae_round_trip(vae, image: Image.Image) -> Image.Image:
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        decoded = vae.decode(vae.encode(array).latent_dist.mode()).sample[0]
    return Image.fromarray(((decoded.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy())


def confusion(examples, images) -> tuple[int, collections.Counter]:
    """(scenes read back exactly, Counter of (kind, size, outcome) per target shape)."""
    counts, exact = collections.Counter(), 0
    for example, image in zip(examples, images):
        parsed = try_parse(image)
        exact += parsed == example.target_scene
        read = {shape.position: shape for shape in (parsed.shapes if parsed else ())}
        for shape in example.target_scene.shapes:
            got = read.get(shape.position)
            outcome = ("right" if got == shape else "missing" if got is None
                       else f"as {got.kind}" if got.kind != shape.kind else "other attribute")
            counts[shape.kind, shape.size, outcome] += 1
    return exact, counts


def print_confusion(name: str, count: int, exact: int, counts: collections.Counter) -> None:
    print(f"\n{name}: scene read back {exact}/{count}\n")
    print("| shape | n | right | wrong: outcome (count) |")
    print("|---|---:|---:|---|")
    for kind in ("circle", "square", "triangle"):
        for size in ("small", "large"):
            cells = {outcome: n for (k, s, outcome), n in counts.items() if (k, s) == (kind, size)}
            wrong = ", ".join(f"{outcome} {n}" for outcome, n in sorted(cells.items()) if outcome != "right")
            print(f"| {size} {kind} | {sum(cells.values())} | {cells.get('right', 0)} | {wrong or '-'} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toyworld")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedulers", default="", help="comma-separated diffusers scheduler classes to try")
    args = parser.parse_args()
    examples = evaluation_set("sr", args.count, split="validation")
    pipe = MTUPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    sources = {f"model ({type(pipe.scheduler).__name__})": generate_outputs(pipe, examples, args.seed),
               "bicubic input": [e.image.resize(e.target.size, Image.BICUBIC) for e in examples],
               "VAE round trip of the target": [vae_round_trip(pipe.vae, e.target) for e in examples]}
    for name, images in sources.items():
        print_confusion(name, args.count, *confusion(examples, images))
    config = pipe.scheduler.config
    for scheduler in filter(None, args.schedulers.split(",")):
        pipe.scheduler = getattr(diffusers, scheduler).from_config(config)
        print_confusion(f"model ({scheduler})", args.count,
                        *confusion(examples, generate_outputs(pipe, examples, args.seed)))


if __name__ == "__main__":
    main()
