"""Does an edit model read the target colour of a recolouring? Each recolouring among the first COUNT validation
edits (training-split scenes, never held-out) is asked for every colour it could be given ("make the circle
red", "... green", ...), all with the example's own noise, and the colour the output shows where the named shape
was is read (the majority palette colour of that shape's pixels):

    python benchmarks/recolour_word_probe.py ADAPTER [--count 320] [--pairs 3:1.6]

If the model reads the word, the shape takes the asked colour whatever the word; if it ignores it, the shape's
colour does not change with the word, and "takes the asked colour" falls to what the same outputs score against
the example's *other* words (the chance column). Intervals: bootstrap over the examples (an example's variants
share its scene and noise, so they are not independent outputs). ADAPTER: an adapter folder on the shipped toy base (e.g.
src/mtu/toyworld/mtu_model).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # edit_sampling_probe, beside this file
from edit_sampling_probe import parse_pairs  # noqa: E402


def read_colour(output, shape) -> str:
    """The majority palette colour of `output`'s pixels under `shape`'s mask (shape drawn in the input)."""
    from mtu.toyworld.oracle import _NAMES, as_array, snap_colours
    from mtu.toyworld.scene import shape_mask

    array = as_array(output)
    snapped = snap_colours(array)[shape_mask(shape, array.shape[0])]
    return _NAMES[int(np.bincount(snapped, minlength=len(_NAMES)).argmax())]


def colour_variants(example) -> list:
    """`example` (a recolouring) once per colour it could be asked for, the instruction's colour word swapped;
    each variant's `edit.after` holds the shape in that colour, so the oracle scores it as usual."""
    from mtu.toyworld.scene import SHAPE_COLOURS
    from mtu.toyworld.tasks import recolouring

    before, shape = example.edit.before, example.edit.shape
    variants = []
    for colour in SHAPE_COLOURS:
        if colour in (shape.colour, before.background):
            continue
        edit = recolouring(before, shape, colour)
        variants.append(dataclasses.replace(example, prompt=edit.instruction, target_scene=edit.after, edit=edit))
    return variants


def pooled_interval(hits, counts) -> tuple[float, float]:
    """95% interval of sum(hits) / sum(counts) by the bootstrap over examples (each example's variants share its
    scene and noise, so they are resampled together, not as independent outputs)."""
    from mtu.stats import bootstrap_interval

    hits, counts = np.asarray(hits, dtype=np.float64), np.asarray(counts, dtype=np.float64)

    def ratio(indices, axis):
        indices = indices.astype(int)
        return hits[indices].sum(axis=axis) / counts[indices].sum(axis=axis)

    return bootstrap_interval(np.arange(len(hits)), statistic=ratio)


def tally(groups: list[list[tuple[str, str, str, str]]]) -> dict:
    """Counts over the outputs: `groups` holds, per example, one (asked, read, original, background) colour
    tuple per variant. "chance" is the share of (output, another variant's word) pairs that match: what "takes
    the asked colour" would be if the output did not depend on the word; "asked_interval" is the bootstrap
    interval over examples of the share that takes the asked colour."""
    asked = original = background = other = 0
    chance_hits = chance_pairs = 0
    distinct = []
    for group in groups:
        for word, read, first, ground in group:
            asked += read == word
            original += read == first
            background += read == ground
            other += read not in (word, first, ground)
            chance_hits += sum(read == other_word for other_word, *_ in group if other_word != word)
            chance_pairs += len(group) - 1
        distinct.append(len({read for _, read, *_ in group}))
    outputs = sum(len(group) for group in groups)
    per_example = [sum(read == word for word, read, *_ in group) for group in groups]
    return {"outputs": outputs, "asked": asked, "original": original, "background": background, "other": other,
            "chance": chance_hits / max(chance_pairs, 1), "distinct": float(np.mean(distinct)) if distinct else 0.0,
            "asked_interval": pooled_interval(per_example, [len(group) for group in groups])}


def main(argv=None) -> int:
    from mtu.pipelines import MTUPipeline
    from mtu.toyworld.components import shipped_base
    from mtu.toyworld.evaluate import evaluation_set, generate_outputs
    from mtu.toyworld.metrics import example_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--count", type=int, default=320, help="validation edits to take the recolourings from")
    parser.add_argument("--pairs", default="3:1.6", help="comma-separated TEXT:IMAGE guidance pairs")
    args = parser.parse_args(argv)
    pairs = parse_pairs(parser, args.pairs)
    if args.count < 1:
        parser.error(f"--count: expected a positive number of validation edits, got {args.count}")
    torch.set_num_threads(1)
    pipe = MTUPipeline.from_base(str(shipped_base()), args.adapter)
    pipe.set_progress_bar_config(disable=True)
    examples = evaluation_set("edit", args.count, split="validation")
    chosen = [(index, example) for index, example in enumerate(examples) if example.edit.kind == "recolour"]
    variants, indices, owners = [], [], []
    for number, (index, example) in enumerate(chosen):
        for variant in colour_variants(example):
            variants.append(variant)
            indices.append(index)  # every variant of an example gets the example's own noise
            owners.append(number)
    print(f"{len(chosen)} recolourings among the first {args.count} validation edits, {len(variants)} outputs "
          "per guidance pair (every colour each could be asked for)\n")
    print("| text : image guidance | takes the asked colour (95% CI) | chance (word ignored) | keeps its colour | "
          "background (shape gone) | another colour | distinct colours per example | exact (95% CI) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for text, image in pairs:
        outputs = generate_outputs(pipe, variants, 0, indices=indices, guidance_scale=text,
                                   image_guidance_scale=image)
        groups = [[] for _ in chosen]
        exact_per_example = np.zeros(len(chosen))
        for owner, variant, output in zip(owners, variants, outputs):
            shape = variant.edit.shape
            word = variant.prompt.rsplit(" ", 1)[1]
            groups[owner].append((word, read_colour(output, shape), shape.colour, variant.edit.before.background))
            exact_per_example[owner] += bool(example_record(variant, np.asarray(output))["exact"])
        counts = tally(groups)
        n = counts["outputs"]
        low, high = counts["asked_interval"]
        exact_low, exact_high = pooled_interval(exact_per_example, [len(group) for group in groups])
        exact = exact_per_example.sum()
        print(f"| {text} : {image} | {counts['asked'] / n:.3f} ({low:.3f}-{high:.3f}) | {counts['chance']:.3f} | "
              f"{counts['original'] / n:.3f} | {counts['background'] / n:.3f} | {counts['other'] / n:.3f} | "
              f"{counts['distinct']:.2f} | {exact / n:.3f} ({exact_low:.3f}-{exact_high:.3f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
