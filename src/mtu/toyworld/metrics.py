"""Partial scores of one output against exact ground truth, and their summaries with intervals (issue 11, point 3).

Exact match is all-or-nothing: a model that gets the shapes right but one colour wrong scores like one that
draws noise. These metrics show progress before exact match moves: per-attribute accuracy of the parsed shapes,
whether an edit left untouched content alone ("preserved") and whether it merely returned its input ("copied").
`example_record` gives one flat dict per example; `summarize` turns a list of them into rates and means with
confidence intervals (`mtu.stats`), so two runs can be compared on the same examples.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from ..stats import summarize_mean, summarize_rate
from ..tasks.base import task_plugin
from ..upcycling.tasks import available_tasks
from .oracle import try_parse
from .scene import Scene, Shape
from .tasks import EDIT_KINDS, Edit

ATTRIBUTES = ("kind", "colour", "size", "position")
PSNR_CAP = 100.0  # dB; identical images have infinite PSNR, which no mean or interval survives (as in evaluate.score)


def _agreements(target: Shape, parsed: Shape | None) -> tuple[bool, ...]:
    """Per attribute, whether `parsed` agrees with `target` (all False when unmatched)."""
    if parsed is None:
        return (False,) * len(ATTRIBUTES)
    return tuple(getattr(target, name) == getattr(parsed, name) for name in ATTRIBUTES)


def _best_matching(targets: tuple[Shape, ...], candidates: tuple[Shape, ...]) -> list[tuple[bool, ...]]:
    """Per target shape, the attribute agreements under the one-to-one matching with the most agreements.

    At most three shapes a side, so brute force over permutations is cheap. Candidates are padded with None so
    that a target shape may stay unmatched; ties go to the first matching in permutation order.
    """
    padded = candidates + (None,) * len(targets)
    best, best_total = None, -1
    for chosen in permutations(range(len(padded)), len(targets)):
        agreements = [_agreements(target, padded[index]) for target, index in zip(targets, chosen)]
        total = sum(map(sum, agreements))
        if total > best_total:
            best, best_total = agreements, total
    return best


def shape_attributes(parsed: Scene | None, target: Scene) -> dict[str, float]:
    """Per-attribute accuracy of a parsed output against the target scene.

    Args:
        parsed: The scene the output shows (`oracle.try_parse`), or None when it shows no valid scene.
        target: The exact target scene.

    Returns:
        {"kind", "colour", "size", "position"}: fractions of target shapes whose best-matched parsed shape has
        that attribute right (unmatched target shapes count as wrong; extra parsed shapes are caught by "count");
        for a target without shapes, 1.0 if the parse has none too, else 0.0. "background" and "count" (same
        number of shapes): 1.0 or 0.0. "parsed": 1.0 if the output parsed at all; when it did not, all are 0.0.
    """
    fields = ATTRIBUTES + ("background", "count", "parsed")
    if parsed is None:
        return {name: 0.0 for name in fields}
    if target.shapes:
        agreements = np.array(_best_matching(target.shapes, parsed.shapes), dtype=np.float64)  # (targets, 4)
        accuracy = dict(zip(ATTRIBUTES, agreements.mean(axis=0).tolist()))
    else:
        accuracy = {name: float(not parsed.shapes) for name in ATTRIBUTES}
    accuracy.update(background=float(parsed.background == target.background),
                    count=float(len(parsed.shapes) == len(target.shapes)), parsed=1.0)
    return accuracy


def preserved(parsed: Scene | None, edit: Edit) -> bool:
    """Whether an edit's output left alone everything the instruction does not touch.

    Every shape of `edit.before` other than `edit.shape` (all of them for "add" and "background") must appear in
    `parsed` with identical attributes, and the background must be unchanged unless the edit is "background".
    What the edit should change is not checked here (that is exact match), nor are stray extra shapes.

    Args:
        parsed: The scene the output shows, or None (then False).
        edit: The edit the output was asked to perform.
    """
    if not isinstance(edit, Edit):
        raise TypeError(f"`edit` must be a tasks.Edit, got {type(edit).__name__}.")
    if parsed is None:
        return False
    if edit.kind != "background" and parsed.background != edit.before.background:
        return False
    untouched = [shape for shape in edit.before.shapes if shape != edit.shape]
    return all(shape in parsed.shapes for shape in untouched)


def example_record(example, output) -> dict:
    """Flat per-example values of one output; the image is parsed once.

    Every task: the `shape_attributes` fields prefixed "attr_", and "exact" (parses to the target scene, sizes
    included). Edit: "kind" (the edit kind), "preserved", "copied" (parses to the input scene), "success"
    (= exact, as `evaluate.score`) and "fidelity_psnr". Inpaint: "removed", "preserved", "copied", "success"
    (removed and exact, as `evaluate.score`) and "fidelity_psnr". Sr: "read_back" (= exact), "psnr" and "ssim".
    PSNRs are capped at `PSNR_CAP`. The task's fields come from its `Evaluation.record` (`mtu.tasks`).

    Args:
        example: An `evaluate.Example`.
        output: The output image (PIL image or (H, W, 3) uint8 array).
    """
    evaluation = task_plugin(example.task).evaluation if example.task in available_tasks() else None
    if evaluation is None:
        scored = [name for name in available_tasks() if task_plugin(name).evaluation is not None]
        raise ValueError(f"`example.task` must be one of {tuple(scored)}, got {example.task!r}.")
    parsed = try_parse(output)
    exact = parsed == example.target_scene
    record = {f"attr_{name}": value for name, value in shape_attributes(parsed, example.target_scene).items()}
    record["exact"] = exact
    evaluation.record(example, output, parsed, record)  # the task's own fields
    return record


def interval_cell(entry: dict) -> str:
    """A `summarize` rate or mean as a table cell: "0.047 (0.016-0.129)"."""
    return f"{entry['value']:.3f} ({entry['low']:.3f}-{entry['high']:.3f})"


def paired_cells(result: dict) -> str:
    """A `mtu.stats.paired_difference` result as three table cells, difference (95% CI) | discordant counts |
    McNemar p: "+0.074 (+0.031 to +0.117) | 27 / 8 | 0.002"; "- | -" in the last two for scores (no McNemar)."""
    cells = f"{result['difference']:+.3f} ({result['low']:+.3f} to {result['high']:+.3f})"
    if "p_value" not in result:
        return cells + " | - | -"
    return cells + f" | {result['first_only']} / {result['second_only']} | {result['p_value']:.3f}"


def attribute_cell(summary: dict) -> str:
    """The per-attribute accuracies of a `summarize` result as one table cell, in the order kind / colour / size /
    position / background: "0.57 / 0.52 / 0.68 / 0.64 / 0.89"."""
    return " / ".join(f"{summary['attr_' + name]['value']:.2f}" for name in ATTRIBUTES + ("background",))


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not _is_bool(value)


def _per_kind(records: list[dict]) -> dict:
    """{kind: {"count", "exact", "preserved"}} over edit records, in `EDIT_KINDS` order."""
    per_kind = {}
    for kind in EDIT_KINDS:
        chosen = [record for record in records if record["kind"] == kind]
        if chosen:
            per_kind[kind] = {"count": len(chosen),
                              "exact": summarize_rate([record["exact"] for record in chosen]),
                              "preserved": summarize_rate([record["preserved"] for record in chosen])}
    return per_kind


def summarize(records: list[dict], seed: int = 0) -> dict:
    """Every field of `records` summarized as {"value", "low", "high", "count"}: bools as a rate with the Wilson
    interval, numbers as a mean with a bootstrap interval; string fields are skipped. Edit records (with "kind")
    also get "per_kind": {kind: {"count", "exact", "preserved"}}.

    Args:
        records: Non-empty list of `example_record` dicts, all with the same fields (one task).
        seed: Seed of the bootstrap resampling.
    """
    if not isinstance(records, (list, tuple)) or not records:
        raise ValueError(f"`records` must be a non-empty list of example records, got {records!r}.")
    fields = list(records[0])
    for index, record in enumerate(records):
        if set(record) != set(fields):
            raise ValueError(f"`records` must all have the same fields (one task); record 0 has {fields}, record "
                             f"{index} has {list(record)}.")
    summary = {}
    for field in fields:
        values = [record[field] for record in records]
        if all(map(_is_bool, values)):
            summary[field] = summarize_rate(np.array(values, dtype=bool))
        elif all(map(_is_number, values)):
            summary[field] = summarize_mean(np.array(values, dtype=np.float64), seed=seed)
        elif not all(isinstance(value, str) for value in values):
            raise TypeError(f"`records` field {field!r} must hold bools, numbers or strings, got "
                            f"{sorted({type(value).__name__ for value in values})}.")
    if "kind" in fields:
        summary["per_kind"] = _per_kind(records)
    return summary
