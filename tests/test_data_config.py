"""`DataSourceConfig` validates every field with errors naming it, and round-trips through JSON."""

from __future__ import annotations

import pytest

import re

from mtu import InputError, TaskSpec, register_task
from mtu.data import DataSourceConfig, DegradationConfig

BASE = {"task": "edit", "format": "folder", "path": "/data/ip2p", "schema": "instructpix2pix"}


def make(**changes) -> DataSourceConfig:
    return DataSourceConfig(**{**BASE, **changes})


def test_defaults():
    config = make()
    assert (config.resolution, config.split, config.weight, config.sr_scale) == (512, "train", 1.0, 2)
    assert config.max_failure_fraction == 0.01 and config.seed == 0
    assert config.degradation == DegradationConfig()


@pytest.mark.parametrize("changes, field, pattern", [
    ({"task": "paint"}, "task", r"unknown task 'paint'; registered tasks: t2i, edit, sr, inpaint, inpaint_mask"),
    ({"format": "tfrecord"}, "format", r"must be one of \('folder', 'hf', 'webdataset'\).*got 'tfrecord'"),
    ({"path": ""}, "path", r"must be a non-empty string, got ''"),
    ({"schema": "laion"}, "schema", r"must be one of \('coco_captions', .*\), got 'laion'"),
    ({"resolution": 500}, "resolution", r"must be a positive multiple of 8, got 500"),
    ({"resolution": 0}, "resolution", r"got 0"),
    ({"resolution": "512"}, "resolution", r"got '512'"),
    ({"split": ""}, "split", r"got ''"),
    ({"weight": 0}, "weight", r"must be a finite number > 0, got 0"),
    ({"weight": float("nan")}, "weight", r"got nan"),
    ({"weight": float("inf")}, "weight", r"got inf"),
    ({"max_failure_fraction": 1.5}, "max_failure_fraction", r"must be a number in \[0, 1\], got 1.5"),
    ({"max_failure_fraction": float("nan")}, "max_failure_fraction", r"got nan"),
    ({"seed": 1.0}, "seed", r"must be an integer, got 1.0"),
    ({"columns": {"caption": "x"}}, "columns", r"role 'caption'.*allowed roles: \['condition', 'target'"),
    ({"columns": {"prompt": ""}}, "columns.prompt", r"must be a non-empty column name, got ''"),
    ({"columns": ["prompt"]}, "columns", r"must be None or a mapping.*got \['prompt'\]"),
    ({"degradation": 3}, "degradation", r"must be a DegradationConfig or a mapping of its fields, got 3"),
    ({"degradation": {"jpeg_quality": (0, 50)}}, "degradation.jpeg_quality", r"got \(0, 50\)"),
])
def test_errors_name_field_and_value(changes, field, pattern):
    with pytest.raises(InputError, match=rf"^{re.escape(field)}: .*{pattern}") as caught:
        make(**changes)
    assert caught.value.field == field


def test_sr_scale_must_divide_resolution():
    with pytest.raises(InputError, match=r"^sr_scale: .* divides resolution=64, got 3"):
        make(task="sr", schema="sr_highres", resolution=64, sr_scale=3)
    assert make(task="sr", schema="sr_highres", resolution=64, sr_scale=4).sr_scale == 4


@pytest.mark.parametrize("task, schema", [("t2i", "instructpix2pix"), ("edit", "captions"), ("sr", "coco_captions"),
                                          ("inpaint_mask", "gqa_inpaint"), ("edit", "mask_inpaint")])
def test_schema_must_fit_the_task(task, schema):
    with pytest.raises(InputError, match=rf"^schema: '{schema}' does not fit task '{task}'.*schemas that fit"):
        make(task=task, schema=schema)


def test_a_registered_task_can_use_a_paired_schema():
    register_task(TaskSpec("sketch2img", "sketch to image", image_inputs=("image",)))
    assert make(task="sketch2img", schema="gqa_inpaint").task == "sketch2img"


def test_json_round_trip_with_nested_degradation():
    config = make(task="sr", schema="sr_highres", columns={"target": "hr"}, resolution=256, weight=0.5, seed=3,
                  degradation=DegradationConfig(jpeg_quality=(50, 90), resize_modes=("area",)))
    restored = DataSourceConfig.from_json_string(config.to_json_string())
    assert restored == config
    assert restored.degradation.jpeg_quality == (50, 90)


def test_unknown_and_missing_keys_raise_naming_the_key():
    """A typo must never run with the default: an unknown key is an error naming the nearest valid one."""
    with pytest.raises(InputError, match=r"^shufle: unknown key; .*DataSourceConfig keys: task, format, path") as caught:
        DataSourceConfig.from_dict({**BASE, "shufle": True})
    assert caught.value.field == "shufle"
    with pytest.raises(InputError, match=r"^resolutoin: unknown key; did you mean 'resolution'\?"):
        DataSourceConfig.from_dict({**BASE, "resolutoin": 256})
    with pytest.raises(InputError, match=r"^degradation.sinc_prob: unknown key"):
        DataSourceConfig.from_dict({**BASE, "task": "sr", "schema": "sr_highres", "degradation": {"sinc_prob": 0.1}})
    with pytest.raises(InputError, match=r"^path: required by DataSourceConfig, but missing"):
        DataSourceConfig.from_dict({key: value for key, value in BASE.items() if key != "path"})
