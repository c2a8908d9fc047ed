"""`mtu analyze router` (Fig. 5): on a model whose routers are set by hand, each task's weights are the softmax of
the logits it was given (top-k cut and renormalised as the model does), and expert sharing has its known values."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import mtu
from mtu.analysis import router_weights
from mtu.analysis.deviation import forward_order
from mtu.cli import main
from mtu.upcycling.layer import MTUFeedForward

TASKS = ["t2i", "edit", "sr"]


def set_logits(model, logits: torch.Tensor) -> None:
    """Gives task t in layer l the router logits `logits[l, t]` (N values): the task embeddings become unit vectors,
    the hidden layer passes them through unchanged (identity, ReLU of non-negative inputs), and the output layer's
    column t holds the logits. Layers count in forward order (down, mid, up), as the analysis reports them."""
    modules = {name: m for name, m in model.mtu_modules() if isinstance(m, MTUFeedForward)}
    layers = [modules[name] for name in forward_order(list(modules))]  # layer depth: down, mid, up
    tasks, size = model.task_embeddings.shape
    with torch.no_grad():
        model.task_embeddings.copy_(torch.eye(tasks, size))
        for index, layer in enumerate(layers):
            router = layer.router
            router.hidden.weight.copy_(torch.eye(*router.hidden.weight.shape))
            router.hidden.bias.zero_()
            router.out.weight.zero_()
            router.out.weight[:, :tasks] = logits[index].T
            router.out.bias.zero_()


@pytest.fixture
def routed(base):
    """An N=4 model of the tiny UNet with hand-set logits: t2i on expert 0, edit on expert 1 (large logits), sr
    uniform, except that in the last layer all tasks get the same logits."""
    model = mtu.upcycle(base, mtu.MTUConfig(tasks=TASKS, num_experts=4))
    layers = sum(isinstance(m, MTUFeedForward) for _, m in model.mtu_modules())
    logits = torch.zeros(layers, len(TASKS), 4)
    logits[:-1, 0, 0] = logits[:-1, 1, 1] = 30.0
    logits[-1] = torch.tensor([1.0, 2.0, 0.0, -1.0])
    set_logits(model, logits)
    return model, logits


def test_weights_are_the_softmax_of_the_set_logits(routed, tmp_path, monkeypatch):
    model, logits = routed
    model.save_pretrained(tmp_path / "adapter")
    monkeypatch.chdir(tmp_path.parent)
    result = router_weights(tmp_path / "adapter")
    assert result.tasks == TASKS and len(result.blocks) == logits.shape[0]
    stages = [name.split(".")[0] for name in result.blocks]
    assert stages == sorted(stages, key=["down_blocks", "mid_block", "up_blocks"].index)  # layer depth
    for index, task in enumerate(TASKS):
        torch.testing.assert_close(result.weights[task], torch.softmax(logits[:, index], dim=-1))
        torch.testing.assert_close(result.softmax[task], result.weights[task])
    in_memory = router_weights(model)
    for task in TASKS:
        torch.testing.assert_close(in_memory.weights[task], result.weights[task])
        torch.testing.assert_close(in_memory.weights[task][0], model.expert_weights(task)[
            "down_blocks.0.attentions.0.transformer_blocks.0.ff"])


def test_sharing_has_its_known_values(routed):
    model, _ = routed
    result = router_weights(model)
    layers = len(result.blocks)
    sharing = torch.tensor(result.sharing(), dtype=torch.float64)
    torch.testing.assert_close(sharing.diagonal(), torch.ones(3, dtype=torch.float64))
    # t2i and edit use disjoint experts except in the last layer (identical weights: sharing 1 there).
    assert sharing[0, 1] == pytest.approx(1 / layers, abs=1e-6)
    # a one-expert task and a uniform one share 1/N per layer.
    assert sharing[0, 2] == pytest.approx(((layers - 1) * 0.25 + 1) / layers, abs=1e-6)
    assert result.task_independent_layers() == [layers]


def test_top_k_keeps_the_largest_weights_renormalised(base):
    model = mtu.upcycle(base, mtu.MTUConfig(tasks=TASKS, num_experts=4, top_k=2))
    layers = sum(isinstance(m, MTUFeedForward) for _, m in model.mtu_modules())
    logits = torch.tensor([3.0, 1.0, 2.0, 0.0]).expand(layers, len(TASKS), 4).clone()
    set_logits(model, logits)
    result = router_weights(model)
    dense = torch.softmax(torch.tensor([3.0, 1.0, 2.0, 0.0]), dim=-1)
    kept = torch.tensor([dense[0], 0.0, dense[2], 0.0]) / (dense[0] + dense[2])
    torch.testing.assert_close(result.softmax["edit"][0], dense)
    torch.testing.assert_close(result.weights["edit"][0], kept)


def test_cli_writes_json_and_figures(routed, tmp_path, capsys):
    model, _ = routed
    model.save_pretrained(tmp_path / "my adapter")
    out = tmp_path / "out"
    assert main(["analyze", "router", str(tmp_path / "my adapter"), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "t2i/edit" in stdout and "route every task to the same expert weights" in stdout
    record = json.loads((out / "router.json").read_text())
    assert record["routing"].startswith("per task and input-independent")
    assert record["weights"]["t2i"][0][0] == pytest.approx(1.0, abs=1e-6)
    for name in ("router_weights.png", "router_sharing.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and (out / name).stat().st_size < 200_000


def test_refuses_what_is_not_an_adapter(base, tmp_path, capsys):
    from mtu.training.config import ModelConfig
    from mtu.training.methods import build_model

    model = build_model(copy.deepcopy(base), ModelConfig(base="random:tiny", method="full"), ["t2i"])
    with pytest.raises(mtu.InputError, match="a baseline has no router"):
        router_weights(model)
    model.save_pretrained(tmp_path / "full")
    code = main(["analyze", "router", str(tmp_path / "full"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mtu: error:") and "mtu_config.json is missing" in err
    assert not (tmp_path / "out").exists()
