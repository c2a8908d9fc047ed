"""N*G > 1: experts that copy the same dense units must not stay copies under training (issue 12, point 1).

With N*G > 1 several experts start from the same dense units and the router starts uniform; if the copies also
got the same output scale they would receive the same gradient forever. `output_scale` splits each unit's scale
unevenly among its copies (same sum, so the init function is unchanged); these tests train a few steps and check
that the copies move apart, that `preserve` still starts at the base, and that folding stays exact.
"""

import pytest
import torch

import mtu
from mtu import MTUConfig, MTUFeedForward
from mtu.upcycling.experts import NEW_UNIT, expert_unit_map, output_scale

from .conftest import nudge, tiny_inputs

COPYING = [(4, 1.0), (2, 1.0), (4, 0.5)]  # N*G > 1: every dense unit has several copies
INITS = ["preserve", "shard"]
CASES = [(n, g, init) for n, g in COPYING for init in INITS]
IDS = [f"N{n}-G{g:g}-{init}" for n, g, init in CASES]


def _layers(model):
    return [module for _, module in model.mtu_modules() if isinstance(module, MTUFeedForward)]


def _copy_pairs(layer):
    """(expert a, expert b, unit positions) for every pair of experts holding copies of the same dense units."""
    unit_map = expert_unit_map(layer.ffn_width, layer.num_experts, layer.expert_width)
    pairs = []
    for a in range(layer.num_experts):
        for b in range(a + 1, layer.num_experts):
            same = (unit_map[a] == unit_map[b]) & (unit_map[a] != NEW_UNIT)
            if same.any():
                pairs.append((a, b, same))
    return pairs


def _smallest_copy_gap(model) -> float:
    """min over layers and copying expert pairs of max |w_in(copy a) - w_in(copy b)| / max |w_in| of the layer.

    w_in rows (value and gate) and b_in are the tensors every copy starts with bit-identical.
    """
    gaps = []
    for layer in _layers(model):
        parts = 2 if layer.gated else 1
        w_in = layer.w_in.detach().unflatten(1, (parts, layer.expert_width))  # (N, parts, d_e, D)
        b_in = layer.b_in.detach().unflatten(1, (parts, layer.expert_width))
        scale = w_in.abs().max()
        pairs = _copy_pairs(layer)
        assert pairs, f"{layer.block_name}: expected copied experts"
        for a, b, same in pairs:
            gap = max((w_in[a][:, same] - w_in[b][:, same]).abs().max(),
                      (b_in[a][:, same] - b_in[b][:, same]).abs().max())
            gaps.append((gap / scale).item())
    return min(gaps)


def _train(model, steps: int = 5, lr: float = 1e-3) -> None:
    """A few Adam steps of a plain regression loss on a mixed t2i + edit batch."""
    params = [param for _, param in model.mtu_named_parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    inputs = tiny_inputs(batch=2, channels=8)
    target = torch.randn(inputs["sample"][:, :4].shape, generator=torch.Generator().manual_seed(3))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model(**inputs, task=["t2i", "edit"]).sample - target).square().mean()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("num_experts, granularity, init", CASES, ids=IDS)
def test_copied_experts_diverge_under_training(base, num_experts, granularity, init):
    torch.manual_seed(0)
    model = mtu.upcycle(base, MTUConfig(tasks=["t2i", "edit"], num_experts=num_experts, granularity=granularity,
                                        init=init)).train()
    assert _smallest_copy_gap(model) == 0.0  # the copies start as exact copies of the dense units
    _train(model)
    gap = _smallest_copy_gap(model)
    assert gap > 1e-4, f"copied experts stayed copies: smallest relative gap {gap:.2e}"


@pytest.mark.parametrize("num_experts, granularity", COPYING, ids=[f"N{n}-G{g:g}" for n, g in COPYING])
def test_preserve_still_equals_the_base_at_init(tiny_base, base, num_experts, granularity):
    inputs = tiny_inputs()
    model = mtu.upcycle(base, MTUConfig(num_experts=num_experts, granularity=granularity)).eval()
    with torch.no_grad():
        expected = tiny_base(**inputs).sample
        actual = model(**inputs, task="t2i").sample
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


SCALE_GRID = [(n, g) for n in (1, 2, 3, 4, 8) for g in (1 / n, 0.5, 1.0, 2.0)]


@pytest.mark.parametrize("num_experts, granularity", SCALE_GRID, ids=[f"N{n}-G{g:g}" for n, g in SCALE_GRID])
@pytest.mark.parametrize("init", INITS)
def test_split_keeps_each_units_total_and_separates_its_copies(num_experts, granularity, init):
    """Per dense unit, the copies' scales sum to N (preserve) or to the copy count (shard, the plain copy's
    total), every copy keeps a positive share, and copies of one unit never share a scale. N*G <= 1 (one copy
    each) gives exactly the old factors N and 1."""
    ffn_width = 8
    expert_width = round(granularity * ffn_width)
    unit_map = expert_unit_map(ffn_width, num_experts, expert_width)
    scale = output_scale(unit_map, ffn_width, init)
    known = unit_map != NEW_UNIT
    assert (scale[~known] == 0).all()
    counts = torch.bincount(unit_map[known], minlength=ffn_width)
    for unit in range(ffn_width):
        copies = scale[unit_map == unit]
        if len(copies) == 0:
            continue
        total = num_experts if init == "preserve" else len(copies)
        torch.testing.assert_close(copies.sum(), torch.tensor(float(total), dtype=torch.float64))
        assert (copies > 0).all()
        assert len(set(copies.tolist())) == len(copies)
        if counts[unit] == 1:
            assert copies.item() == (num_experts if init == "preserve" else 1.0)


@pytest.mark.parametrize("num_experts, granularity, init", [(4, 0.5, "preserve"), (4, 0.5, "shard")],
                         ids=["N4-G0.5-preserve", "N4-G0.5-shard"])
def test_fold_stays_exact_with_split_copies(base, num_experts, granularity, init):
    """Folding the 2 top experts of N=4, G=1/2 (full width, copies included) stays exact."""
    model = mtu.upcycle(base, MTUConfig(tasks=["t2i", "edit"], num_experts=num_experts, granularity=granularity,
                                        top_k=2, init=init)).eval()
    nudge(model)
    for task in ("t2i", "edit"):
        inputs = tiny_inputs(channels=model.task_in_channels(task))
        with torch.no_grad():
            expected = model(**inputs, task=task).sample
            actual = mtu.fold(model, task).eval()(**inputs).sample
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
