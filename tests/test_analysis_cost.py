"""`mtu analyze cost` (Table 2's columns): the paper's equal-FLOPs claim holds exactly where it should.

With active experts x G = 1 the experts' matmuls are the dense FFN's, so the routed model's FLOPs exceed the base's
(with the task's input conv) by no more than the routing work `routing_overhead_bound` adds up (router MLPs on the
task embeddings, folding the task LayerNorm bias and mixing output biases: per layer, independent of the tokens).
That bound is the tolerance; with top_k x G > 1 the FLOPs exceed it, with top_k x G < 1 they fall below the base.
"""

from __future__ import annotations

import copy
import json

import pytest

import mtu
from mtu.analysis import cost_table
from mtu.cli import main

TASKS = ["t2i", "edit"]


def adapter(base, folder, tasks=TASKS, **config):
    model = mtu.upcycle(copy.deepcopy(base), mtu.MTUConfig(tasks=tasks, **config), fingerprint=False)
    model.save_pretrained(folder)
    return model


def rows(result, kind: str) -> dict:
    return {row.task: row for row in result.rows if row.kind == kind}


@pytest.mark.parametrize("config", [{"num_experts": 4}, {"num_experts": 4, "granularity": 0.5, "top_k": 2},
                                    {"num_experts": 1, "granularity": 1.0}])
def test_flops_equal_the_base_when_active_experts_x_g_is_one(tiny_base, tmp_path, config):
    model = adapter(tiny_base, tmp_path / "a", tasks=["edit"], **config)
    result = cost_table([tmp_path / "a"])
    single, routed = rows(result, "single-task fine-tune"), rows(result, "mtu")
    bound = result.routing_overhead_bounds["a"]
    assert 0 < bound < 0.05 * single["edit"].flops  # small next to the UNet even at the tiny model's 8x8 latents
    # edit: its 8-channel input conv costs the same in both
    assert single["edit"].flops <= routed["edit"].flops <= single["edit"].flops + bound
    assert {task: row.flops for task, row in rows(result, "mtu folded").items()} == {
        task: row.flops for task, row in single.items()}
    trainable = sum(p.numel() for _, p in model.mtu_named_parameters())
    assert routed["edit"].trainable_parameters == trainable
    assert routed["edit"].parameters == sum(p.numel() for p in model.parameters())
    assert result.rows[0].flops < single["edit"].flops and result.rows[0].trainable_parameters is None


@pytest.mark.parametrize("config, more", [({"num_experts": 2, "granularity": 1.0}, True),
                                          ({"num_experts": 4, "granularity": 0.5}, True),
                                          ({"num_experts": 4, "top_k": 2}, False)])
def test_flops_grow_with_active_experts_x_g(tiny_base, tmp_path, config, more):
    adapter(tiny_base, tmp_path / "a", tasks=["t2i"], **config)
    result = cost_table([tmp_path / "a"])
    single, routed = rows(result, "single-task fine-tune")["t2i"], rows(result, "mtu")["t2i"]
    if more:
        assert routed.flops > single.flops + result.routing_overhead_bounds["a"]
        assert "mtu folded" not in {row.kind for row in result.rows}  # wider than the base FFN: no fold
    else:
        assert routed.flops < single.flops


def test_baselines_and_the_cli(tiny_base, tmp_path, monkeypatch, capsys):
    """A trained LoRA baseline's folder: its trainable count is what the trainer trains; the CLI writes JSON + PNG."""
    from mtu.training.config import ModelConfig
    from mtu.training.methods import build_model

    adapter(tiny_base, tmp_path / "mtu run" / "final", tasks=["edit"], num_experts=4)
    lora = build_model(copy.deepcopy(tiny_base), ModelConfig(base="random:tiny", method="lora", lora_rank=2), ["edit"])
    lora.save_pretrained(tmp_path / "lora" / "final")
    monkeypatch.chdir(tmp_path / "lora")
    out = tmp_path / "cost out"
    assert main(["analyze", "cost", str(tmp_path / "mtu run"), "final", "--out", str(out)]) == 0
    assert "single-task fine-tune" in capsys.readouterr().out
    record = json.loads((out / "cost.json").read_text())
    lora_rows = [row for row in record["rows"] if row["kind"] == "lora"]
    assert [row["task"] for row in lora_rows] == ["edit"]
    assert lora_rows[0]["trainable_parameters"] == sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert lora_rows[0]["flops"] > record["rows"][0]["flops"]  # unmerged LoRA adds its low-rank matmuls
    assert "FlopCounterMode" in record["flop_convention"] and record["latent_size"] == [8, 8]
    assert (out / "cost.png").read_bytes()[:4] == b"\x89PNG" and (out / "cost.png").stat().st_size < 200_000


def test_sample_size_and_bad_models(tiny_base, tmp_path):
    adapter(tiny_base, tmp_path / "a", tasks=["t2i"], num_experts=4)
    small, large = cost_table([tmp_path / "a"]), cost_table([tmp_path / "a"], sample_size=16)
    assert large.rows[0].flops > 3 * small.rows[0].flops and large.sample_size == [16, 16]
    with pytest.raises(mtu.InputError, match="neither an MTU adapter"):
        cost_table([tmp_path])
    with pytest.raises(mtu.InputError, match="sample_size"):
        cost_table([tmp_path / "a"], sample_size=0)
    mtu.upcycle(mtu.load_base_unet("random:toyworld"), mtu.MTUConfig(tasks=TASKS), fingerprint=False
                ).save_pretrained(tmp_path / "other")
    with pytest.raises(mtu.InputError, match="another base architecture"):
        cost_table([tmp_path / "a", tmp_path / "other"])
