"""Cutting a dense FFN's hidden units into experts (Sec. 5, "Expert architecture").

A GEGLU FFN is y = W_out (value(x) * gelu(gate(x))) + b_out. Its hidden units are independent, so cutting the
hidden dimension into N groups (value row, gate row and output column of each unit together) gives N smaller
FFNs whose outputs sum to the dense one. This module decides which dense unit every expert unit copies and the
factor on its output column (split unevenly among the copies of a unit when N * G > 1).
"""

from __future__ import annotations

import torch

from ..errors import InputError

NEW_UNIT = -1  # an expert unit with no dense counterpart (only when G > 1)


def expert_unit_map(ffn_width: int, num_experts: int, expert_width: int) -> torch.Tensor:
    """(N, d_expert) index of the dense unit each expert unit copies, or NEW_UNIT.

    Expert e's first min(d_expert, d_ffn) units continue a tiling of the dense units, wrapping around: with
    N * G = 1 this is a plain partition (the paper's shards); with N * G > 1 dense units repeat across experts.
    When G > 1 an expert holds every dense unit once and its remaining d_expert - d_ffn units are new.
    """
    copied = min(expert_width, ffn_width)
    local = torch.arange(expert_width)
    starts = torch.arange(num_experts)[:, None] * copied
    unit_map = (starts + local[None, :]) % ffn_width
    unit_map[:, copied:] = NEW_UNIT
    return unit_map


SPLIT_SPREAD = 0.5  # copies of one unit get shares 1 -/+ SPLIT_SPREAD of an even split: 3:1 loudest to quietest


def copy_shares(unit_map: torch.Tensor, ffn_width: int) -> torch.Tensor:
    """(N, d_expert) share of its dense unit that each expert unit carries; a unit's copies sum to 1, new units 0.

    A unit with one copy gets 1. A unit with c > 1 copies gets c distinct positive shares, evenly spaced from
    (1 - SPLIT_SPREAD) / c to (1 + SPLIT_SPREAD) / c (so 1/4 and 3/4 for two copies), dealt to its copies in
    expert order rotated by the unit's index: no expert is a scaled copy of another, every expert holds loud and
    quiet units, and the split is deterministic (no random numbers drawn, so the seeded stream is untouched).
    """
    known = unit_map != NEW_UNIT
    units = unit_map[known]  # expert-major order
    counts = torch.bincount(units, minlength=ffn_width)
    copies = counts[units]
    # rank of each copy among its unit's copies, in expert-major order
    order = torch.argsort(units, stable=True)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(units)
    rank[order] = torch.arange(len(units)) - first[units[order]]
    slot = (rank + units) % copies
    spread = torch.where(copies > 1, 2 * slot.to(torch.float64) / (copies - 1).clamp(min=1) - 1, 0.0)
    share = (1 + SPLIT_SPREAD * spread) / copies
    shares = torch.zeros(unit_map.shape, dtype=torch.float64)
    shares[known] = share
    return shares


def output_scale(unit_map: torch.Tensor, ffn_width: int, init: str) -> torch.Tensor:
    """(N, d_expert) factor for each expert unit's output column.

    The router starts uniform (weight 1/N per expert). "preserve": dense unit j's copies get factors N * share,
    shares summing to 1 (`copy_shares`), so the weighted sum of experts equals the dense FFN exactly. "shard":
    the paper's plain copy, factor 1 per copy; with several copies of a unit they get c_j * share, which keeps
    the unit's total c_j and so the plain copy's function. New units get 0: they start silent and learn from
    there. With N * G <= 1 every unit has one copy and the factors are exactly N ("preserve") and 1 ("shard").

    Why uneven: with N * G > 1 the copies of a unit share input weights, and the router's zeroed output layer
    makes every expert weight 1/N. Equal factors would give the copies identical gradients at every step, so
    they would stay identical under any optimizer (extra experts that can never specialise, a router with no
    signal). Unequal factors with the same sum leave the function at step 0 unchanged -- each copy is still
    exactly its dense unit, only louder or quieter, and no random direction is added -- while the copies'
    input gradients scale with their factor and the experts' outputs differ, so the router gets a gradient too.
    Under SGD the copies separate from the first step. Adam divides out a gradient's scale, but the copies'
    output columns get equal updates on unequal starts, so from the second step their gradients are no longer
    proportional and they separate as well (tests/test_expert_symmetry.py: > 1e-2 relative after 5 steps).
    A zero-sum random perturbation would also keep the step-0 sum, but needs a noise scale and adds directions
    the base does not have; the uneven split needs neither.
    """
    if init not in ("preserve", "shard"):
        raise InputError(f"`init` must be 'preserve' or 'shard', got {init!r}.")
    known = unit_map != NEW_UNIT
    shares = copy_shares(unit_map, ffn_width)
    if init == "preserve":
        return shares * unit_map.shape[0]
    counts = torch.bincount(unit_map[known], minlength=ffn_width).to(torch.float64)
    scale = torch.zeros(unit_map.shape, dtype=torch.float64)
    scale[known] = shares[known] * counts[unit_map[known]]
    return scale
