"""Equivalences that hold after training: folded == routed, mixed batch == per task, batched == naive loop.

Every test first nudges all MTU parameters away from their initial values.
"""

import pytest
import torch
import torch.nn.functional as F

import mtu
from mtu import MTUConfig, MTUFeedForward

from .conftest import nudge, tiny_inputs

ALL_TASKS = ["t2i", "edit", "sr", "inpaint", "inpaint_mask"]
FOLDABLE = [
    {"num_experts": 4},
    {"num_experts": 1},
    {"num_experts": 2, "granularity": 0.5, "init": "shard"},
    {"num_experts": 8, "granularity": 1 / 8, "top_k": 4},   # 4 of 8 small experts: half the width, padded
    {"num_experts": 4, "granularity": 1 / 2, "top_k": 2},   # 2 of 4 half-width experts: exactly d_ffn
    {"num_experts": 1, "granularity": 0.5, "init": "shard"},  # narrower than the base, padded
]


def _task_inputs(model, task, batch=2, seed=0):
    return tiny_inputs(batch=batch, channels=model.task_in_channels(task), seed=seed)


@pytest.mark.parametrize("options", FOLDABLE, ids=lambda o: "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}"
                                                                     for k, v in o.items()))
def test_folded_equals_mtu_for_every_task(base, options):
    model = mtu.upcycle(base, MTUConfig(tasks=ALL_TASKS, **options)).eval()
    nudge(model)
    for task in ALL_TASKS:
        folded = mtu.fold(model, task).eval()
        inputs = _task_inputs(model, task)
        with torch.no_grad():
            expected = model(**inputs, task=task).sample
            actual = folded(**inputs).sample
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5, msg=f"task {task}")
        assert type(folded).__name__ == "UNet2DConditionModel"
        assert folded.config.in_channels == model.task_in_channels(task)


def test_folded_has_the_base_parameter_count(tiny_base, base):
    model = mtu.upcycle(base, MTUConfig())
    nudge(model)
    base_count = sum(p.numel() for p in tiny_base.parameters())
    assert sum(p.numel() for p in mtu.fold(model, "t2i").parameters()) == base_count
    extra_conv = tiny_base.conv_in.out_channels * 4 * 3 * 3  # edit's 4 image-latent channels
    assert sum(p.numel() for p in mtu.fold(model, "edit").parameters()) == base_count + extra_conv


def test_fold_refuses_a_model_wider_than_the_base(base):
    model = mtu.upcycle(base, MTUConfig(num_experts=2, granularity=1.0))
    with pytest.raises(ValueError, match="cannot fold block .*d_ffn=128"):
        mtu.fold(model, "t2i")


def test_mixed_task_batch_equals_per_task_forwards(base):
    model = mtu.upcycle(base, MTUConfig(tasks=ALL_TASKS, top_k=None)).eval()
    nudge(model)
    tasks = ["edit", "t2i", "inpaint_mask", "edit"]
    inputs = tiny_inputs(batch=4, channels=9)  # padded to the widest task present
    with torch.no_grad():
        mixed = model(**inputs, task=tasks).sample
        for i, task in enumerate(tasks):
            channels = model.task_in_channels(task)
            single = {key: value[i:i + 1] for key, value in inputs.items()}
            single["sample"] = single["sample"][:, :channels]
            torch.testing.assert_close(mixed[i:i + 1], model(**single, task=task).sample, rtol=1e-5, atol=1e-5,
                                       msg=f"sample {i} ({task})")


def test_mixed_batch_gradients_reach_every_task(base):
    model = mtu.upcycle(base, MTUConfig())
    nudge(model)
    model(**tiny_inputs(batch=4, channels=8), task=["t2i", "edit", "sr", "inpaint"]).sample.square().mean().backward()
    layer = next(m for _, m in model.mtu_modules() if isinstance(m, MTUFeedForward))
    assert all(layer.ln_weight.grad[t].abs().sum() > 0 for t in range(4))
    assert all(model.unet.conv_in.convs[t].weight.grad is not None for t in ("t2i", "edit", "sr", "inpaint"))


def naive_expert_loop(layer: MTUFeedForward, hidden_states, task: int, task_embeddings):
    """Eq. 1 written literally: for each expert, its task LayerNorm, its FFN, times its router weight."""
    weights = layer.router(task_embeddings)[task]
    output = 0
    for expert in range(layer.num_experts):
        if weights[expert] == 0:
            continue
        normed = F.layer_norm(hidden_states, (layer.dim,), layer.ln_weight[task, expert], layer.ln_bias[task, expert],
                              layer.eps)
        hidden = F.linear(normed, layer.w_in[expert], layer.b_in[expert])
        if layer.gated:
            value, gate = hidden.chunk(2, dim=-1)
            hidden = value * F.gelu(gate)
        else:
            hidden = F.gelu(hidden, approximate=layer.approximate)
        output = output + weights[expert] * F.linear(hidden, layer.w_out[:, expert], layer.b_out[expert])
    return output


@pytest.mark.parametrize("tokens", [16, 1024], ids=["few-tokens", "many-tokens"])
@pytest.mark.parametrize("options", [{"num_experts": 4}, {"num_experts": 8, "top_k": 3}, {"num_experts": 2,
                                     "granularity": 2.0}], ids=["N4", "N8-top3", "N2-G2"])
def test_batched_experts_equal_naive_loop(base, options, tokens):
    """Both batched formulations (affines on the tokens, or folded into the weights) equal the literal loop."""
    model = mtu.upcycle(base, MTUConfig(**options))
    nudge(model)
    hidden_states = torch.randn(2, tokens, 64)
    for _, layer in model.mtu_modules():
        if isinstance(layer, MTUFeedForward) and layer.dim == 64:
            break
    assert layer.prefers_token_path(2 * tokens) == (tokens == 16)
    for task in range(len(model.task_names)):
        with model.route(model.task_names[task]), torch.no_grad():
            batched = layer(hidden_states)
            expected = naive_expert_loop(layer, hidden_states, task, model.task_embeddings)
        torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-5)


def _matmul_calls(model, layer) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountMatmuls(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
                CountMatmuls.calls += 1
            return func(*args, **(kwargs or {}))

    with model.route("t2i"), CountMatmuls(), torch.no_grad():
        layer(torch.randn(1, 64, layer.dim))
    return CountMatmuls.calls


@pytest.mark.parametrize("token_path", [True, False], ids=["token-path", "weight-path"])
@pytest.mark.parametrize("num_experts", [2, 16])
def test_experts_run_batched_not_in_a_loop(tiny_base, num_experts, token_path, monkeypatch):
    """The number of matmuls an MTU layer launches does not grow with N (all experts in one matmul each)."""
    import copy

    monkeypatch.setattr(MTUFeedForward, "prefers_token_path", lambda self, tokens: token_path)
    counts = []
    for n in (1, num_experts):
        model = mtu.upcycle(copy.deepcopy(tiny_base), MTUConfig(num_experts=n))
        layer = next(m for _, m in model.mtu_modules() if isinstance(m, MTUFeedForward))
        counts.append(_matmul_calls(model, layer))
    assert counts[0] == counts[1]


def test_top_k_routes_to_k_experts(base):
    model = mtu.upcycle(base, MTUConfig(num_experts=8, top_k=3))
    nudge(model)
    for weights in model.expert_weights("edit").values():
        assert (weights > 0).sum() == 3
        torch.testing.assert_close(weights.sum(), torch.tensor(1.0))


def test_router_starts_uniform(base):
    model = mtu.upcycle(base, MTUConfig(num_experts=4))
    for weights in model.expert_weights("sr").values():
        torch.testing.assert_close(weights, torch.full((4,), 0.25))
