"""Cutting a dense FFN's hidden units into experts (Sec. 5, "Expert architecture").

A GEGLU FFN is y = W_out (value(x) * gelu(gate(x))) + b_out. Its hidden units are independent, so cutting the
hidden dimension into N groups (value row, gate row and output column of each unit together) gives N smaller
FFNs whose outputs sum to the dense one. This module decides which dense unit every expert unit copies.
"""

from __future__ import annotations

import torch

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


def output_scale(unit_map: torch.Tensor, ffn_width: int, init: str) -> torch.Tensor:
    """(N, d_expert) factor for each expert unit's output column.

    "preserve": the router starts uniform (weight 1/N per expert) and dense unit j appears c_j times, so each copy
    is scaled by N / c_j and the weighted sum of experts equals the dense FFN exactly. "shard": the paper's plain
    copy (factor 1). New units get 0: they start silent and learn from there.
    """
    num_experts = unit_map.shape[0]
    known = unit_map != NEW_UNIT
    counts = torch.bincount(unit_map[known], minlength=ffn_width).to(torch.float64)
    if init == "preserve":
        scale = torch.zeros(unit_map.shape, dtype=torch.float64)
        scale[known] = num_experts / counts[unit_map[known]]
    elif init == "shard":
        scale = known.to(torch.float64)
    else:
        raise ValueError(f"`init` must be 'preserve' or 'shard', got {init!r}.")
    return scale
