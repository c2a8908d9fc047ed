"""2-process DDP on CPU (gloo) through `accelerate launch` equals a 1-process run with the same global batch."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import mtu
from mtu.training import config_from_dict, train

from .training_parts import tiny_run_config


@pytest.mark.skipif(shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists(),
                    reason="accelerate launcher not installed")
def test_two_process_ddp_equals_one_process(tmp_path):
    common = {"max_steps": 3, "checkpoint_every": 0, "task_sampling": "stratified"}
    single = tiny_run_config(tmp_path, batch_size=4, **common)
    single["output_dir"] = str(tmp_path / "single")
    train(config_from_dict(single))

    double = tiny_run_config(tmp_path, batch_size=2, **common)  # 2 processes x 2 = the same global batch of 4
    double["output_dir"] = str(tmp_path / "ddp")
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(double))
    launcher = str(Path(sys.executable).with_name("accelerate"))
    # On a machine without GPUs, `--multi_gpu` starts CPU processes joined by gloo (accelerate's MULTI_CPU).
    result = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mtu.cli", "train",
                             "--config", str(config_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["tasks_seen_per_process"] == [["edit", "t2i"], ["edit", "t2i"]]
    expected = load_file(str(tmp_path / "single" / "final" / "mtu_model.safetensors"))
    actual = load_file(str(tmp_path / "ddp" / "final" / "mtu_model.safetensors"))
    assert expected.keys() == actual.keys()
    # Adam divides by sqrt(v): float noise in near-zero gradients becomes visible noise in the update, so the
    # check is on the size of the difference relative to how far training moved the weights.
    model = mtu.load_mtu(tmp_path / "single" / "final")
    initial = dict(mtu.upcycle(mtu.load_base_unet(single["model"]["base"]), model.mtu_config).mtu_named_parameters())
    difference = sum((actual[k] - expected[k]).square().sum() for k in expected).sqrt()
    update = sum((expected[k] - initial[k].detach()).square().sum() for k in expected).sqrt()
    assert update > 1e-2, "training did not move the weights enough to compare"
    assert difference / update < 1e-2, f"relative difference {difference / update:.2e}"
    assert max((actual[k] - expected[k]).abs().max() for k in expected) < 1e-4
