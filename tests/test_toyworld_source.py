"""Toy world source: example dicts of the data layer's shape, deterministic per (index, epoch), and batchable."""

import pytest
import torch

from mtu.data.dataset import check_failure_rate
from mtu.data.examples import collate_examples
from mtu.data.schemas import get_schema
from mtu.toyworld.source import TASK_SCHEMAS, ToyWorldConfig, ToyWorldDataset

EXPECTED_KEYS = {  # the paper's tasks, pinned; another task's items hold what its schema reads
    "t2i": {"task", "target", "prompt", "key"},
    "edit": {"task", "target", "condition", "prompt", "input_caption", "output_caption", "key"},
    "sr": {"task", "target", "condition", "prompt", "key"},
    "inpaint": {"task", "target", "condition", "prompt", "input_caption", "output_caption", "key"},
    "inpaint_mask": {"task", "target", "condition", "mask", "prompt", "key"},
}


@pytest.mark.parametrize("task", sorted(TASK_SCHEMAS))
def test_items_have_the_data_layer_shape(task):
    dataset = ToyWorldDataset(ToyWorldConfig(task=task, count=8, resolution=32))
    example = dataset[0]
    schema = get_schema(TASK_SCHEMAS[task])
    derived = {"task", "key", "target", "prompt"} | ({"condition"} if schema.provides_condition else set()) | \
        {role for role in schema.roles if role != "target"}
    assert set(example) == EXPECTED_KEYS[task] if task in EXPECTED_KEYS else derived <= set(example)
    assert example["task"] == task and example["target"].shape == (3, 32, 32)
    assert example["target"].min() >= -1 and example["target"].max() <= 1
    if "mask" in example:
        assert example["mask"].shape == (1, 32, 32) and example["mask"].sum() > 0
    batch = collate_examples([dataset[index] for index in range(len(dataset))])
    assert batch["target"].shape == (8, 3, 32, 32)
    assert check_failure_rate(dataset, min_attempts=1) == 0.0


def test_items_are_deterministic_per_epoch():
    dataset = ToyWorldDataset(ToyWorldConfig(task="edit", count=20, seed=3))
    first, again = dataset.get(5, epoch=0), dataset.get(5, epoch=0)
    assert first["prompt"] == again["prompt"] and torch.equal(first["target"], again["target"])
    prompts = {dataset.get(5, epoch=epoch)["prompt"] for epoch in range(8)}
    assert len(prompts) > 1  # a fresh edit per epoch


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="resolution.*30"):
        ToyWorldConfig(task="t2i", resolution=30)
    with pytest.raises(ValueError, match="task.*'sketch2img'"):
        ToyWorldConfig(task="sketch2img")


def test_trainer_runs_on_the_toy_world(tmp_path):
    """`format: toyworld` is one more data source of the trainer: t2i + edit + sr on the tiny pipeline."""
    from mtu.training import config_from_dict, train

    from .training_parts import tiny_run_config

    config = tiny_run_config(tmp_path, max_steps=2, checkpoint_every=0)
    config["data"] = [{"format": "toyworld", "task": task, "count": 50, "resolution": 32, "weight": weight}
                      for task, weight in (("t2i", 2.0), ("edit", 1.0), ("sr", 1.0))]
    config["output_dir"] = str(tmp_path / "toy")
    summary = train(config_from_dict(config))
    assert summary["steps"] == 2 and summary["nonfinite_skipped"] == 0
    assert summary["data_failures"]["toyworld:train:seed=0"]["failed"] == 0


def test_edit_kind_weights_choose_the_training_edits():
    dataset = ToyWorldDataset(ToyWorldConfig.from_dict(
        {"format": "toyworld", "task": "edit", "count": 40, "edit_kind_weights": {"recolour": 1, "add": 0, "remove": 0,
                                                                                  "move": 0, "background": 0}}))
    assert all(dataset[index]["prompt"].startswith("make ") for index in range(len(dataset)))  # "make the X red"
    assert dataset.config.to_dict()["edit_kind_weights"] == {"recolour": 1.0, "add": 0.0, "remove": 0.0, "move": 0.0,
                                                             "background": 0.0}


@pytest.mark.parametrize("options, message", [
    ({"task": "t2i", "edit_kind_weights": {"move": 2}}, "edit_kind_weights: must be null for task 't2i'"),
    ({"task": "edit", "edit_kind_weights": {"mvoe": 2}}, "edit_kind_weights: unknown edit kind 'mvoe'"),
    ({"task": "edit", "edit_kind_weights": {"move": -2}}, "edit_kind_weights: the weight of edit kind 'move'"),
])
def test_edit_kind_weights_validation_names_field(options, message):
    with pytest.raises(ValueError, match=message):
        ToyWorldConfig.from_dict({"format": "toyworld", **options})
