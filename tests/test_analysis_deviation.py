"""`mtu analyze deviation` (Fig. 2, Fig. 6): hand-made fine-tunes of the tiny UNet, moved by known amounts, give
known distances and ranks, read from diffusers folders and from a trained `method: full` folder."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from mtu import InputError
from mtu.analysis import COMPONENTS, weight_deviation
from mtu.analysis.deviation import rank_descending, transformer_blocks
from mtu.cli import main

SHIFT = 0.01


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(the tiny base UNet, its folder)."""
    from mtu.architectures import build_unet

    unet = build_unet("tiny", seed=0).eval()
    folder = tmp_path_factory.mktemp("base dir") / "base unet"  # paths with spaces
    unet.save_pretrained(folder, safe_serialization=True)
    return unet, folder


def moved(base, moves: dict[tuple[int, str], float]):
    """A copy of `base` with, per (block index, component), every weight of that component's first linear shifted
    by the given amount; returns (the fine-tune, {(block name, component): expected Frobenius distance})."""
    unet = copy.deepcopy(base)
    blocks = transformer_blocks(unet)
    expected = {}
    for (index, component), amount in moves.items():
        name, block = blocks[index]
        layer = {"sa.q": block.attn1.to_q, "ca.k": block.attn2.to_k, "ffn": block.ff.net[2]}[component]
        with torch.no_grad():
            layer.weight.add_(amount)
        expected[(name, component)] = amount * math.sqrt(layer.weight.numel())
    return unet, expected


def test_blocks_count_in_forward_order(tiny):
    """Layer depth as the UNet runs: down, mid, up (diffusers registers the mid block last)."""
    names = [name for name, _ in transformer_blocks(tiny[0])]
    assert [name.split(".")[0] for name in names] == ["down_blocks"] * 2 + ["mid_block"] + ["up_blocks"] * 4
    assert names[3:5] == ["up_blocks.0.attentions.0.transformer_blocks.0", "up_blocks.0.attentions.1.transformer_blocks.0"]


def test_rank_descending_shares_ties():
    assert rank_descending({"a": 3.0, "b": 1.0, "c": 3.0, "d": 0.0}) == {"a": 1.5, "c": 1.5, "b": 3, "d": 4}


def test_distances_and_ranks_of_known_moves(tiny):
    base, _ = tiny
    ffn_tune, ffn_expected = moved(base, {(0, "ffn"): SHIFT, (3, "ffn"): 2 * SHIFT})
    sa_tune, sa_expected = moved(base, {(0, "sa.q"): SHIFT})
    result = weight_deviation(base, [ffn_tune, sa_tune], labels=["ffn", "sa"])
    first, second = (tune.distances("frobenius") for tune in result.finetunes)
    for (block, component), value in ffn_expected.items():
        assert first[block][component] == pytest.approx(value, rel=1e-6)
    name0, name3 = result.blocks[0], result.blocks[3]
    assert second[name0]["sa.q"] == pytest.approx(sa_expected[(name0, "sa.q")], rel=1e-6)
    assert sum(v for block in first.values() for v in block.values()) == pytest.approx(sum(ffn_expected.values()))
    ranks = result.mean_ranks()
    # Block 0: FFN first in one fine-tune, SA Q first in the other; the 8 unmoved components tie at ranks 2-9.
    assert ranks[name0]["ffn"] == ranks[name0]["sa.q"] == pytest.approx((1 + 5.5) / 2)
    assert ranks[name0]["ca.v"] == pytest.approx(5.5)
    assert ranks[name3]["ffn"] == pytest.approx((1 + 5) / 2)  # moved in one fine-tune, all tied (rank 5) in the other
    assert result.mean_ranks(groups=True)[name3] == {"FFN": 1.5, "SA": 2.25, "CA": 2.25}
    assert set(ranks[name0]) == set(COMPONENTS)


def test_measures_separate_moved_most_from_largest(tiny):
    """The FFN holds more weights than one attention matrix: moving both by the same amount per weight, the
    Frobenius distance ranks the FFN first, the per-parameter RMS ranks SA Q first (the FFN's other linear and
    the biases did not move)."""
    base, _ = tiny
    tune, _ = moved(base, {(1, "ffn"): SHIFT, (1, "sa.q"): SHIFT})
    block = transformer_blocks(base)[1][0]
    assert weight_deviation(base, [tune]).finetunes[0].ranks("frobenius")[block]["ffn"] == 1
    rms = weight_deviation(base, [tune], measure="rms").finetunes[0]
    assert rms.ranks("rms")[block]["sa.q"] == 1
    assert rms.distances("rms")[block]["sa.q"] == pytest.approx(SHIFT, rel=1e-6)
    relative = weight_deviation(base, [tune], measure="relative").finetunes[0].distances("relative")[block]
    assert relative["sa.q"] == pytest.approx(SHIFT * math.sqrt(block_numel(base, 1)) / block_norm(base, 1), rel=1e-5)


def block_numel(base, index):
    return transformer_blocks(base)[index][1].attn1.to_q.weight.numel()


def block_norm(base, index):
    return float(transformer_blocks(base)[index][1].attn1.to_q.weight.detach().double().norm())


def test_bad_measure_and_labels(tiny):
    base, _ = tiny
    tune, _ = moved(base, {(0, "ffn"): SHIFT})
    with pytest.raises(InputError, match="measure: must be one of"):
        weight_deviation(base, [tune], measure="l1")
    with pytest.raises(InputError, match="labels: gives 2 labels for 1 fine-tunes"):
        weight_deviation(base, [tune], labels=["a", "b"])
    zeroed = copy.deepcopy(base)
    with torch.no_grad():
        transformer_blocks(zeroed)[0][1].attn2.to_k.weight.zero_()
    with pytest.raises(InputError, match="base weights are all zero"):
        weight_deviation(zeroed, [tune], measure="relative")


def test_cli_on_diffusers_folders_writes_json_and_figures(tiny, tmp_path, monkeypatch, capsys):
    base, base_folder = tiny
    tune, expected = moved(base, {(2, "ffn"): SHIFT})
    pipeline_like = tmp_path / "fine tunes" / "edit ft"
    tune.save_pretrained(pipeline_like, safe_serialization=True)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "out"
    code = main(["analyze", "deviation", "--base", str(base_folder), "--finetuned", str(pipeline_like),
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "deviation.json").read_text())
    (block, _), value = next(iter(expected.items()))
    assert record["finetunes"][0]["label"] == "edit ft"
    assert record["finetunes"][0]["distances"][block]["ffn"] == pytest.approx(value, rel=1e-6)
    assert record["mean_ranks"][block]["ffn"] == 1 and record["rank_convention"].startswith("1 = moved most")
    for name in ("deviation_ranks.png", "deviation_distances.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and (out / name).stat().st_size < 200_000


def test_a_trained_full_run_is_read_from_its_folder(tiny, tmp_path):
    """What `mtu train` writes for `method: full` (final/ with trainable.safetensors + method.json)."""
    from mtu.training.config import ModelConfig
    from mtu.training.methods import build_model

    base, base_folder = tiny
    model = build_model(copy.deepcopy(base), ModelConfig(base=str(base_folder), method="full"), ["edit"])
    name, block = transformer_blocks(model.unet)[4]
    with torch.no_grad():
        block.ff.net[0].proj.weight.add_(SHIFT)  # GEGLU's projection (value and gate rows) is part of the FFN
        model.unet.conv_in.convs["edit"].weight.add_(1.0)  # conv_in is not compared
    run = tmp_path / "full-edit"
    model.save_pretrained(run / "final")
    for source in (run, run / "final"):
        tune = weight_deviation(str(base_folder), [str(source)]).finetunes[0]
        assert tune.label == "full-edit"
        assert tune.distances("frobenius")[name]["ffn"] == pytest.approx(
            SHIFT * math.sqrt(block.ff.net[0].proj.weight.numel()), rel=1e-6)
        assert sum(v for b in tune.distances("frobenius").values() for v in b.values()) == pytest.approx(
            tune.distances("frobenius")[name]["ffn"])


def test_refuses_what_is_not_a_full_fine_tune_of_the_base(tiny, tmp_path, capsys):
    import mtu
    from mtu.architectures import build_unet

    base, base_folder = tiny
    with pytest.raises(InputError, match="equals the base in every compared weight"):
        weight_deviation(base, [copy.deepcopy(base)])
    with pytest.raises(InputError, match="base's architecture"):
        weight_deviation(base, [build_unet("toyworld", seed=0)])
    broken, _ = moved(base, {(0, "ffn"): SHIFT})
    with torch.no_grad():
        transformer_blocks(broken)[0][1].attn1.to_v.weight[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN or infinite"):
        weight_deviation(base, [broken])
    adapter = tmp_path / "adapter"
    mtu.upcycle(copy.deepcopy(base), mtu.MTUConfig(tasks=["t2i"], num_experts=2)).save_pretrained(adapter)
    code = main(["analyze", "deviation", "--base", str(base_folder), "--finetuned", str(adapter), "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mtu: error: --finetuned: ") and "is an MTU adapter" in err
    assert len(err.strip().splitlines()) == 1  # refused before the base was loaded, in one line
    assert not (tmp_path / "out").exists()


def test_refuses_a_lora_run(tiny, tmp_path):
    from mtu.training.config import ModelConfig
    from mtu.training.methods import build_model

    base, base_folder = tiny
    model = build_model(copy.deepcopy(base), ModelConfig(base=str(base_folder), method="lora", lora_rank=2), ["t2i"])
    model.save_pretrained(tmp_path / "lora" / "final")
    with pytest.raises(InputError, match="'lora' run; deviation compares full fine-tunes"):
        weight_deviation(base, [tmp_path / "lora"])
