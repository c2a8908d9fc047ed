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
import torch
from PIL import Image

from mtu.pipelines import MTUPipeline
from mtu.pipelines.inputs import image_to_tensor
from mtu.toyworld.evaluate import evaluation_set, generate_outputs
from mtu.toyworld.oracle import try_parse


@torch.no_grad()
def vae_round_trip(pipe, images: list[Image.Image]) -> list[Image.Image]:
    """`images` encoded (posterior mode) and decoded by the pipeline's own VAE, through its own pre- and
    post-processing."""
    latents = pipe.vae.encode(image_to_tensor(images, pipe.vae_scale_factor)).latent_dist.mode()
    return pipe.decode(latents * pipe.vae.config.scaling_factor, "pil")


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toyworld")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedulers", default="", help="comma-separated diffusers scheduler classes to try")
    args = parser.parse_args(argv)
    schedulers = [name for name in args.schedulers.split(",") if name]
    for name in schedulers:  # before the model loads
        if not (isinstance(getattr(diffusers, name, None), type) and name.endswith("Scheduler")):
            parser.error(f"--schedulers: {name!r} is not a diffusers scheduler class (e.g. EulerDiscreteScheduler)")
    examples = evaluation_set("sr", args.count, split="validation")
    pipe = MTUPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    sources = {f"model ({type(pipe.scheduler).__name__})": generate_outputs(pipe, examples, args.seed),
               "bicubic input": [e.image.resize(e.target.size, Image.BICUBIC) for e in examples],
               "VAE round trip of the target": vae_round_trip(pipe, [e.target for e in examples])}
    for name, images in sources.items():
        print_confusion(name, args.count, *confusion(examples, images))
    config = pipe.scheduler.config
    for scheduler in schedulers:
        pipe.scheduler = getattr(diffusers, scheduler).from_config(config)
        print_confusion(f"model ({scheduler})", args.count,
                        *confusion(examples, generate_outputs(pipe, examples, args.seed)))


if __name__ == "__main__":
    main()
