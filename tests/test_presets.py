"""Presets carry the paper's recipe (Appendix A.2, Table 2) as documented in docs/PRESETS.md; explicit values win."""

import copy
import math
import re
from pathlib import Path

import pytest

from mtu import MTUConfig
from mtu.training import config as config_module
from mtu.training import load_train_config

TABLE = Path(__file__).resolve().parents[1] / "docs" / "PRESETS.md"
SOURCES = [{"task": "t2i", "format": "folder", "path": "t2i/", "schema": "captions"},
           {"task": "edit", "format": "folder", "path": "edit/", "schema": "instructpix2pix"}]

# The documented values (docs/PRESETS.md), written out: what a run with only a base and data sources resolves to.
EXPECTED = {
    "sd15": {"num_experts": 4, "granularity": 0.25, "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0},
    "sdxl": {"num_experts": 1, "granularity": 1.0, "optimizer": "adamw", "lr": 5e-5, "weight_decay": 0.01},
}


def _resolve(preset: str, **run):
    tree = {"preset": preset, "model": {"base": "path/to/base"}, "data": copy.deepcopy(SOURCES)}
    for key, value in run.items():
        tree[key] = value
    return load_train_config(None, tree)


def _leaves(tree: dict, prefix: str = "") -> dict:
    leaves = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            leaves.update(_leaves(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def _documented_rows() -> dict[str, tuple]:
    """field -> (sd15 value, sdxl value, source cell) from the table's rows that name a field in backticks."""
    rows = {}
    for line in TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`[a-z_.]+`", cells[0]) and cells[1].startswith("`"):
            read = config_module.read_yaml
            rows[cells[0].strip("`")] = (read(cells[1].strip("`")), read(cells[2].strip("`")), cells[3])
    return rows


def test_presets_equal_the_documented_table():
    rows = _documented_rows()
    for column, name in enumerate(("sd15", "sdxl")):
        leaves = _leaves(config_module.PRESETS[name])
        assert set(rows) == set(leaves) == set(config_module.PRESET_SOURCES[name]), name
        for field, documented in rows.items():
            value = leaves[field]
            value = list(value) if isinstance(value, tuple) else value
            assert value == documented[column] and type(value) is type(documented[column]), (name, field)
            source = config_module.PRESET_SOURCES[name][field]
            assert documented[2] == source or f"{name}: {source}" in documented[2], (name, field, documented[2])


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_a_run_with_a_preset_carries_the_papers_recipe(name):
    expected = EXPECTED[name]
    config = _resolve(name)
    mtu_config = MTUConfig(**config.model.mtu)
    assert (mtu_config.num_experts, mtu_config.granularity, mtu_config.top_k) == \
        (expected["num_experts"], expected["granularity"], None)
    assert [source.resolution for source in config.data] == [512, 512]
    assert (config.batch_size, config.gradient_accumulation_steps) == (16, 1)
    # 100 epochs of Table 6's four train splits at 8 GPUs x 16.
    assert config.max_steps == math.ceil(100 * (118_287 + 281_709 + 23_744 + 90_089) / (8 * 16)) == 401_429
    optim = config.optim
    assert (optim.optimizer, optim.lr, optim.weight_decay) == \
        (expected["optimizer"], expected["lr"], expected["weight_decay"])
    # Ours, where the paper is silent: torch's Adam defaults, a constant rate, clipping at 1.0.
    assert (optim.betas, optim.eps, optim.schedule, optim.warmup_steps, optim.max_grad_norm) == \
        ((0.9, 0.999), 1e-8, "constant_with_warmup", 0, 1.0)


def test_sdxl_preset_is_one_expert_of_full_width():
    """Table 2: N = 1 for SDXL (and G = 1/N = 1); the model it builds has one expert per FFN."""
    config = _resolve("sdxl")
    assert config.model.mtu.num_experts == 1
    assert MTUConfig(tasks=["t2i", "edit"], **config.model.mtu).expert_width(5120) == 5120


def test_explicit_values_win_over_the_preset():
    run = {
        "model": {"base": "path/to/base", "mtu": {"num_experts": 2}},
        "data": [{**SOURCES[0], "resolution": 256}, SOURCES[1]],
        "batch_size": 3,
        "max_steps": 7,
        "optim": {"weight_decay": 0.0, "max_grad_norm": 0},
    }
    tree = config_module.apply_preset({"preset": "sdxl", **copy.deepcopy(run)})
    assert [source["resolution"] for source in tree["data"]] == [256, 512]  # only the source that sets none
    run["data"][1] = {**SOURCES[1], "resolution": 256}  # a run's sources share one resolution (checked when built)
    config = load_train_config(None, {"preset": "sdxl", **copy.deepcopy(run)})
    assert MTUConfig(**config.model.mtu).granularity == 0.5  # G = 1/N follows the N given, not the preset's N
    assert (config.batch_size, config.max_steps) == (3, 7)
    assert (config.optim.weight_decay, config.optim.max_grad_norm) == (0.0, 0)  # falsy values win too
    assert (config.optim.optimizer, config.optim.lr) == ("adamw", 5e-5)  # what the run leaves unset


def test_overrides_win_over_run_file_and_preset(tmp_path):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"preset": "sd15", "model": {"base": "b", "mtu": {"num_experts": 8}},
                                    "data": SOURCES, "max_steps": 50}))
    config = load_train_config(path, ["--model.mtu.num_experts", "2", "--optim.lr", "3e-5", "--batch_size=4"])
    assert (config.model.mtu.num_experts, config.optim.lr, config.batch_size, config.max_steps) == (2, 3e-5, 4, 50)


def test_resolving_does_not_change_the_presets():
    before = copy.deepcopy(config_module.PRESETS)
    tree = config_module.apply_preset({"preset": "sd15", "model": {"base": "b"}, "data": copy.deepcopy(SOURCES)})
    tree["model"]["mtu"]["num_experts"] = 16
    tree["data"][0]["resolution"] = 64
    tree["optim"]["betas"].append(0.5)
    config = _resolve("sd15")
    config.model.mtu.num_experts = 16
    config.data[0].resolution = 64
    assert config_module.PRESETS == before


def test_unknown_preset_is_refused_naming_the_presets():
    with pytest.raises(ValueError, match=r"^preset: must be one of \['sd15', 'sdxl'\] or null, got 'sd3'\.$"):
        _resolve("sd3")
