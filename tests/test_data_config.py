"""`DataSourceConfig` validates every field with errors naming it, and round-trips through JSON."""

from __future__ import annotations

import pytest

from mtu import TaskSpec, register_task
from mtu.data import DataSourceConfig, DegradationConfig

BASE = {"task": "edit", "format": "folder", "path": "/data/ip2p", "schema": "instructpix2pix"}


def make(**changes) -> DataSourceConfig:
    return DataSourceConfig(**{**BASE, **changes})


def test_defaults():
    config = make()
    assert (config.resolution, config.split, config.weight, config.sr_scale) == (512, "train", 1.0, 2)
    assert config.max_failure_fraction == 0.01 and config.seed == 0
    assert config.degradation == DegradationConfig()


@pytest.mark.parametrize("changes, pattern", [
    ({"task": "paint"}, r"unknown task 'paint'; registered tasks: t2i, edit, sr, inpaint, inpaint_mask"),
    ({"format": "tfrecord"}, r"`format` must be one of \('folder', 'hf', 'webdataset'\), got 'tfrecord'"),
    ({"path": ""}, r"`path` must be a non-empty string, got ''"),
    ({"schema": "laion"}, r"`schema` must be one of \('coco_captions', .*\), got 'laion'"),
    ({"resolution": 500}, r"`resolution` must be a positive multiple of 8, got 500"),
    ({"resolution": 0}, r"`resolution` .* got 0"),
    ({"resolution": "512"}, r"`resolution` .* got '512'"),
    ({"split": ""}, r"`split` .* got ''"),
    ({"weight": 0}, r"`weight` must be a finite number > 0, got 0"),
    ({"weight": float("nan")}, r"`weight` .* got nan"),
    ({"max_failure_fraction": 1.5}, r"`max_failure_fraction` must be a number in \[0, 1\], got 1.5"),
    ({"seed": 1.0}, r"`seed` must be an integer, got 1.0"),
    ({"columns": {"caption": "x"}}, r"`columns` has role 'caption'.*allowed roles: \['condition', 'target'"),
    ({"columns": {"prompt": ""}}, r"`columns\['prompt'\]` must be a non-empty column name, got ''"),
    ({"columns": ["prompt"]}, r"`columns` must be None or a dict.*got \['prompt'\]"),
    ({"degradation": 3}, r"`degradation` must be a DegradationConfig or a dict, got 3"),
])
def test_errors_name_field_and_value(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(**changes)


def test_sr_scale_must_divide_resolution():
    with pytest.raises(ValueError, match=r"`sr_scale` .* divides resolution=64, got 3"):
        make(task="sr", schema="sr_highres", resolution=64, sr_scale=3)
    assert make(task="sr", schema="sr_highres", resolution=64, sr_scale=4).sr_scale == 4


@pytest.mark.parametrize("task, schema", [("t2i", "instructpix2pix"), ("edit", "captions"), ("sr", "coco_captions"),
                                          ("inpaint_mask", "gqa_inpaint"), ("edit", "mask_inpaint")])
def test_schema_must_fit_the_task(task, schema):
    with pytest.raises(ValueError, match=rf"`schema` '{schema}' does not fit task '{task}'.*schemas that fit"):
        make(task=task, schema=schema)


def test_a_registered_task_can_use_a_paired_schema():
    register_task(TaskSpec("colorize", "grey image to colour", image_inputs=("image",)))
    assert make(task="colorize", schema="gqa_inpaint").task == "colorize"


def test_json_round_trip_with_nested_degradation():
    config = make(task="sr", schema="sr_highres", columns={"target": "hr"}, resolution=256, weight=0.5, seed=3,
                  degradation=DegradationConfig(jpeg_quality=(50, 90), resize_modes=("area",)))
    restored = DataSourceConfig.from_json_string(config.to_json_string())
    assert restored == config
    assert restored.degradation.jpeg_quality == (50, 90)


def test_unknown_keys_warn_naming_the_key_and_missing_keys_raise():
    with pytest.warns(UserWarning, match="DataSourceConfig: ignoring unknown key 'shuffle'"):
        DataSourceConfig.from_dict({**BASE, "shuffle": True})
    with pytest.warns(UserWarning, match="DegradationConfig: ignoring unknown key 'sinc_prob'"):
        DataSourceConfig.from_dict({**BASE, "task": "sr", "schema": "sr_highres", "degradation": {"sinc_prob": 0.1}})
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['path'\]"):
        DataSourceConfig.from_dict({key: value for key, value in BASE.items() if key != "path"})
