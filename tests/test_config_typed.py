"""A run config is typed all the way down: `model`, `model.mtu`, `optim` and every data source are dataclasses,
built (and checked) with the config, and the resolved config still round-trips through dicts and YAML, so saved runs,
resume checks and presets keep working (issue 13, point 4)."""

import copy
import dataclasses
import json

import pytest
import yaml

from mtu import MTUConfig
from mtu.data import DataSourceConfig
from mtu.training import ModelConfig, OptimConfig, config_from_dict, load_train_config
from mtu.training import config as config_module
from mtu.training.config import config_differences, read_yaml, resolve_config_paths

RUN = {
    "model": {"base": "no/such/base", "mtu": {"num_experts": 2}},
    "data": [{"task": "t2i", "format": "folder", "path": "t2i/", "schema": "captions", "resolution": 32},
             {"task": "edit", "format": "toyworld", "resolution": 32, "count": 64},
             {"task": "t2i", "format": "webdataset", "path": "shards/{0..3}.tar", "schema": "captions",
              "resolution": 32, "weight": 0.5}],
    "optim": {"lr": 3e-4, "betas": [0.8, 0.99]},
    "task_loss_weights": {"edit": 2.0},
}


def _config():
    return config_from_dict(copy.deepcopy(RUN))


def test_every_nested_section_is_a_dataclass():
    config = _config()
    assert isinstance(config.model, ModelConfig) and isinstance(config.optim, OptimConfig)
    assert isinstance(config.model.mtu, config_module.MTUSection) and config.model.mtu.num_experts == 2
    assert [type(source).__name__ for source in config.data] == ["DataSourceConfig", "ToyWorldConfig",
                                                                 "DataSourceConfig"]
    assert all(dataclasses.is_dataclass(source) for source in config.data)
    assert config.tasks == ["t2i", "edit"]  # the sources' tasks in order of first appearance: the model's tasks


def test_sections_given_as_dicts_through_the_python_api_are_typed_too():
    model = ModelConfig(base="b", mtu={"num_experts": 3})
    assert isinstance(model.mtu, config_module.MTUSection) and model.mtu.num_experts == 3
    source = DataSourceConfig.from_dict(RUN["data"][0])
    config = config_from_dict({**copy.deepcopy(RUN), "model": model, "data": [source], "task_loss_weights": {}})
    assert config.model is model and config.data == [source]


def test_the_mtu_section_mirrors_mtu_config_but_tasks():
    section_fields = {item.name: item.default for item in dataclasses.fields(config_module.MTUSection)}
    config_fields = {item.name: item.default for item in dataclasses.fields(MTUConfig) if item.name != "tasks"}
    assert section_fields == config_fields
    section = config_module.MTUSection(num_experts=2, top_k=1, init="shard")
    assert section.granularity is None  # G = 1/N is resolved when the model is built, after presets and overrides
    built = MTUConfig(tasks=["t2i", "edit"], **section)
    assert built == section.mtu_config(["t2i", "edit"])
    assert (built.num_experts, built.granularity, built.top_k, built.init) == (2, 0.5, 1, "shard")


def test_the_resolved_config_round_trips_through_dicts_and_yaml(tmp_path):
    config = _config()
    assert config_from_dict(config.to_dict()) == config
    saved = yaml.safe_dump(json.loads(json.dumps(config.to_dict())))  # as the trainer writes config.yaml
    assert config_from_dict(read_yaml(saved)) == config
    (tmp_path / "run.yaml").write_text(saved)
    # Relative paths in a run file are relative to the file's folder (issue 14)
    assert load_train_config(tmp_path / "run.yaml") == config_from_dict(resolve_config_paths(config.to_dict(), tmp_path))
    assert config_differences(read_yaml(saved), json.loads(json.dumps(config.to_dict()))) == []


def test_a_config_saved_before_the_sections_were_typed_still_resumes():
    """An earlier config.yaml holds only the `model.mtu` and source fields its run set: its defaults are no change;
    a real change is still named by its full path."""
    written_then = {**copy.deepcopy(RUN), "resume": "none"}
    now = json.loads(json.dumps(_config().to_dict()))
    written_then.pop("resume"), now.pop("resume")  # the trainer leaves `resume` out of the comparison
    assert config_differences(written_then, now) == []
    changed = copy.deepcopy(now)
    changed["data"][2]["weight"], changed["model"]["mtu"]["num_experts"] = 2.0, 4
    assert config_differences(written_then, changed) == ["data[2].weight", "model.mtu.num_experts"]


def test_a_config_that_does_not_resolve_is_compared_as_written():
    old = {"model": {"base": "b", "mtu": {"num_experts": 0}}, "data": []}
    assert config_differences(old, {**old, "max_steps": 5}) == ["max_steps"]


@pytest.mark.parametrize("preset", ["sd15", "sdxl"])
def test_a_preset_fills_the_typed_sections(preset):
    source = {key: value for key, value in RUN["data"][0].items() if key != "resolution"}
    config = load_train_config(None, {"preset": preset, "model": {"base": "b"}, "data": [source]})
    config.model.mtu.mtu_config(config.tasks)  # the preset's N and G build a model config
    assert config.data[0].resolution == 512 and config.model.mtu.num_experts == (4 if preset == "sd15" else 1)
