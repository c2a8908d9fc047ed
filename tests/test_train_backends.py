"""What the trainer does for DeepSpeed before `accelerate.prepare` (the run itself needs a GPU: scripts/gpu_checks.py)."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from accelerate.utils import DeepSpeedPlugin

from mtu.training import config_from_dict
from mtu.training.trainer import Trainer

from .training_parts import tiny_run_config


def _trainer_stub(config, resume_from=None, **plugin_options):
    plugin = DeepSpeedPlugin(zero_stage=2, **plugin_options)
    stub = SimpleNamespace(config=config, resume_from=resume_from,
                           accelerator=SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin)))
    return stub, plugin.deepspeed_config


def test_deepspeed_auto_values_come_from_the_run_config(tmp_path):
    config = config_from_dict(tiny_run_config(tmp_path, batch_size=3, optim={"max_grad_norm": 0.5}))
    stub, values = _trainer_stub(config)
    Trainer._configure_deepspeed(stub)
    assert values["train_micro_batch_size_per_gpu"] == 3
    assert values["gradient_accumulation_steps"] == 1
    assert values["gradient_clipping"] == 0.5


def test_deepspeed_values_the_user_set_are_kept(tmp_path):
    config = config_from_dict(tiny_run_config(tmp_path, batch_size=3))
    stub, values = _trainer_stub(config, gradient_clipping=0.1)
    Trainer._configure_deepspeed(stub)
    assert values["gradient_clipping"] == 0.1


def test_deepspeed_refuses_accumulation_and_resume(tmp_path):
    config = config_from_dict(tiny_run_config(tmp_path, gradient_accumulation_steps=2))
    with pytest.raises(ValueError, match="`gradient_accumulation_steps` must be 1 under DeepSpeed \\(got 2\\)"):
        Trainer._configure_deepspeed(_trainer_stub(config)[0])
    config = config_from_dict(tiny_run_config(tmp_path))
    with pytest.raises(ValueError, match="resuming under DeepSpeed is not supported; resume '/x/checkpoint-2'"):
        Trainer._configure_deepspeed(_trainer_stub(config, resume_from="/x/checkpoint-2")[0])


@pytest.mark.parametrize("flags, message", [
    (["--quality-jobs", "mtu-n4:0,bogus:1"], "--quality-jobs: ['bogus:1'] are not ROW:SEED"),
    (["--quality-jobs", "single:sr"], "--quality-jobs: ['single:sr'] are not ROW:SEED"),
    (["--quality-workers", "0"], "--quality-workers must be at least 1 (got 0)"),
])
def test_gpu_checks_refuses_bad_quality_jobs_before_any_work(tmp_path, flags, message):
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_checks.py"
    result = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "out"), "--quality-seconds", "1"]
                            + flags, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran or was written
