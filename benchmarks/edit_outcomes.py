"""Where does an edit fail? Per edit kind, each held-out edit's output sorted into one outcome (docs/DIAGNOSIS.md).

    python benchmarks/edit_outcomes.py [--model toyworld] [--count 256]

Outcomes, from the oracle's reading of the output against the input scene (before) and the target (after), cell
by cell of the 3x3 grid (the cells the instruction changes: where the referred shape is and, for a move, where it
goes; for a background change, the background, and the rest is every shape):
  exact        the target scene
  unchanged    the input scene: the instruction was not carried out
  change only  the changed cells are right, something elsewhere is not
  rest only    the cells the instruction does not touch are right, the changed ones are not
  neither      both wrong (or the output does not parse)
The model samples with its own defaults (the guidance recorded in its sampling.json).
"""

from __future__ import annotations

import argparse
from collections import Counter

OUTCOMES = ("exact", "unchanged", "change only", "rest only", "neither")


def cells(scene) -> dict:
    return {shape.position: shape for shape in scene.shapes}


def outcome(edit, parsed) -> str:
    """One of `OUTCOMES` for an output parsed as `parsed` (None: unparsable) of `edit`."""
    if parsed is None:
        return "neither"
    if parsed == edit.after:
        return "exact"
    if parsed == edit.before:
        return "unchanged"
    before, after, got = cells(edit.before), cells(edit.after), cells(parsed)
    every = set(before) | set(after) | set(got)
    if edit.kind == "background":  # the change is the background; the rest is every shape
        change_ok = parsed.background == edit.after.background
        rest_ok = all(got.get(c) == after.get(c) for c in every)
    else:
        changed = {c for c in set(before) | set(after) if before.get(c) != after.get(c)}
        change_ok = all(got.get(c) == after.get(c) for c in changed)
        rest_ok = (all(got.get(c) == after.get(c) for c in every - changed)
                   and parsed.background == edit.after.background)
    return {(True, False): "change only", (False, True): "rest only"}.get((change_ok, rest_ok), "neither")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toyworld")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from mtu.pipelines import MTUPipeline
    from mtu.toyworld.evaluate import evaluation_set, generate_outputs
    from mtu.toyworld.oracle import try_parse

    pipe = MTUPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    examples = evaluation_set("edit", args.count)
    outputs = generate_outputs(pipe, examples, args.seed)
    counts: dict[str, Counter] = {}
    for example, output in zip(examples, outputs):
        counts.setdefault(example.edit.kind, Counter())[outcome(example.edit, try_parse(output))] += 1
    print(f"| kind | n | {' | '.join(OUTCOMES)} |\n|---|---:|" + "---:|" * len(OUTCOMES))
    for kind, counter in counts.items():
        total = sum(counter.values())
        print(f"| {kind} | {total} | " + " | ".join(f"{counter[name]}" for name in OUTCOMES) + " |")


if __name__ == "__main__":
    main()
