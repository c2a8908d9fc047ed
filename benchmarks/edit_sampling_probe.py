"""Inference-side suspects of a trained edit adapter, on validation edits (training-split scenes, never held-out):
guidance pairs (text, image) including no guidance at all, and the number of sampling steps.

    python benchmarks/edit_sampling_probe.py ADAPTER [--count 128] [--task edit|inpaint] [--pairs 3:1.0,3:1.5]
                                             [--kind recolour]   (only the edits of one kind among the first COUNT)

ADAPTER: an adapter folder (e.g. src/mtu/toyworld/mtu_model, the shipped model) on the shipped toy base.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

PAIRS = ((1.0, 1.0), (7.5, 1.6), (7.5, 3.0), (3.0, 1.6), (3.0, 3.0), (1.0, 3.0), (3.0, 5.0))


def parse_pairs(parser: argparse.ArgumentParser, text: str) -> list[tuple[float, float]]:
    """`--pairs` "3:1.6,7.5:1.6" as [(3.0, 1.6), (7.5, 1.6)]; anything else is a one-line `parser.error`."""
    try:
        pairs = [tuple(float(value) for value in pair.split(":")) for pair in text.split(",")]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError
    except ValueError:
        parser.error(f"--pairs: expected TEXT:IMAGE pairs separated by commas, got {text!r}")
    return pairs


def main(argv=None) -> int:
    from mtu.pipelines import MTUPipeline
    from mtu.toyworld.components import shipped_base
    from mtu.toyworld.evaluate import evaluation_set, generate_outputs
    from mtu.toyworld.metrics import attribute_cell, example_record, interval_cell, summarize
    from mtu.toyworld.tasks import EDIT_KINDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--task", default="edit")
    parser.add_argument("--kind", default=None, help="edit only: keep the edits of this kind among the first COUNT")
    parser.add_argument("--steps", default="20", help="comma-separated numbers of sampling steps")
    parser.add_argument("--pairs", default=",".join(f"{text}:{image}" for text, image in PAIRS),
                        help="comma-separated TEXT:IMAGE guidance pairs")
    args = parser.parse_args(argv)
    pairs = parse_pairs(parser, args.pairs)
    if args.kind is not None and (args.task != "edit" or args.kind not in EDIT_KINDS):
        parser.error(f"--kind: expected one of {', '.join(EDIT_KINDS)} with --task edit, got {args.kind!r} "
                     f"(--task {args.task})")
    torch.set_num_threads(1)
    pipe = MTUPipeline.from_base(str(shipped_base()), args.adapter)
    pipe.set_progress_bar_config(disable=True)
    examples = evaluation_set(args.task, args.count, split="validation")
    indices = [index for index, example in enumerate(examples) if args.kind is None or example.edit.kind == args.kind]
    examples = [examples[index] for index in indices]  # each keeps its own seed, so equals the unfiltered run's
    print("| steps | text guidance | image guidance | exact (95% CI) | preserved | copied | kind / colour / size / "
          "position / background |")
    print("|---:|---:|---:|---|---:|---:|---|")
    exact = {}  # (steps, text, image) -> per-example exact outcomes, for the paired comparisons below
    for steps in (int(value) for value in args.steps.split(",")):
        for text, image in pairs:
            outputs = generate_outputs(pipe, examples, 0, indices=indices, guidance_scale=text,
                                       image_guidance_scale=image, num_inference_steps=steps)
            records = [example_record(ex, np.asarray(out)) for ex, out in zip(examples, outputs)]
            exact[steps, text, image] = np.array([bool(record["exact"]) for record in records])
            summary = summarize(records)
            print(f"| {steps} | {text} | {image} | {interval_cell(summary['exact'])} | "
                  f"{summary['preserved']['value']:.3f} | {summary['copied']['value']:.3f} | "
                  f"{attribute_cell(summary)} |", flush=True)
    print_paired(exact)
    return 0


def print_paired(exact: dict) -> None:
    """Each setting's exact outcomes against the first setting's, on the same examples and seeds."""
    from mtu.stats import paired_difference
    from mtu.toyworld.metrics import paired_cells

    (first, reference), *others = exact.items()
    print(f"\nPaired against steps {first[0]}, text {first[1]}, image {first[2]} (same examples and seeds):\n")
    print("| steps | text guidance | image guidance | exact difference (95% CI) | only this / only the first | McNemar p |")
    print("|---:|---:|---:|---|---|---:|")
    for (steps, text, image), outcomes in others:
        result = paired_difference(outcomes, reference)
        print(f"| {steps} | {text} | {image} | {paired_cells(result)} |")


if __name__ == "__main__":
    sys.exit(main())
