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


@pytest.mark.parametrize("name", ["router_lr", "text_encoder_lr"])
def test_deepspeed_refuses_a_parameter_group_of_its_own(tmp_path, name):
    config = config_from_dict(tiny_run_config(tmp_path, optim={"lr": 1e-3, name: 1e-4}))
    with pytest.raises(ValueError, match=f"`optim.{name}` \\(a parameter group of its own\\) is not supported under "
                                         f"DeepSpeed") as caught:
        Trainer._configure_deepspeed(_trainer_stub(config)[0])
    assert str(caught.value).startswith(f"optim.{name}")


@pytest.mark.parametrize("flags, message", [
    (["--quality-jobs", "mtu-n4:0,bogus:1"], "--quality-jobs: ['bogus:1'] are not ROW:SEED"),
    (["--quality-jobs", "single:sr"], "--quality-jobs: ['single:sr'] are not ROW:SEED"),
    (["--quality-workers", "0"], "--quality-workers must be at least 1 (got 0)"),
    (["--longrun-checkpoint-every", "0"], "--longrun-checkpoint-every must be at least 1 (got 0)"),
])
def test_gpu_checks_refuses_bad_quality_jobs_before_any_work(tmp_path, flags, message):
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_checks.py"
    result = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "out"), "--quality-seconds", "1"]
                            + flags, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran or was written


@pytest.mark.slow
def test_gpu_checks_continues_the_long_run_and_returns_its_newest_checkpoint(tmp_path):
    """Part 4 on the CPU: the committed long-run state resumes in another folder and its newest checkpoint comes
    back in longrun.tar (about 2-3 minutes: drawing the run's 200,000 scenes, then a few steps)."""
    import json
    import tarfile

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_checks.py"
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(script), "--out", str(out), "--work", str(tmp_path / "work"),
                             "--skip-backends", "--skip-pretrain", "--longrun-seconds", "150",
                             "--longrun-checkpoint-every", "1"], capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    record = json.loads((out / "longrun.json").read_text())
    assert record["steps"] >= 1, record
    with tarfile.open(out / "longrun.tar") as tar:
        names = tar.getnames()
    assert f"run/checkpoints/{record['to']}/state.safetensors" in names and "run/config.yaml" in names


def _cut_back(source: Path, target: Path, step: int) -> None:
    """`target`: the run in `source` as if killed right after its `step` checkpoint."""
    import shutil

    name = f"checkpoint-{step:07d}"
    shutil.copytree(source / "checkpoints" / name, target / "checkpoints" / name)


def test_a_checkpoint_whose_parameters_share_one_adam_step_resumes_exactly(tmp_path):
    """DeepSpeed ZeRO keeps one `step` per flat group, and its checkpoints stored one step tensor for every
    parameter. Loaded into torch's Adam, that shared tensor was incremented once per parameter at each step, so the
    bias corrections ran ahead: the resumed run ended 19% (CPU) / 31% (H200) of the update away. The layout is
    rebuilt here from a plain checkpoint (same values, one shared step tensor): it must resume exactly."""
    import torch

    from mtu.training import train
    from mtu.training.checkpoint import load_checkpoint, save_checkpoint

    from .training_parts import assert_same_training

    config = tiny_run_config(tmp_path, max_steps=4, checkpoint_every=2, keep_checkpoints=4)
    config["output_dir"] = str(tmp_path / "whole")
    train(config_from_dict(config))
    resumed = tmp_path / "resumed"
    _cut_back(tmp_path / "whole", resumed, 2)
    folder = resumed / "checkpoints" / "checkpoint-0000002"
    step, state = load_checkpoint(folder)
    shared = next(iter(state["optimizer"]["state"].values()))["step"]
    for entry in state["optimizer"]["state"].values():
        assert torch.equal(entry["step"], shared)
        entry["step"] = shared  # one tensor for all, as a ZeRO checkpoint held it
    save_checkpoint(resumed, step, state, keep=4)
    _, reloaded = load_checkpoint(folder)
    steps = [entry["step"] for entry in reloaded["optimizer"]["state"].values()]
    assert len({tensor.untyped_storage().data_ptr() for tensor in steps}) == 1, "the layout must hold a shared step"
    config.update(output_dir=str(resumed), resume="auto")
    train(config_from_dict(config), overwrite=True)
    relative = assert_same_training(tmp_path / "whole", resumed, config["model"]["base"])
    assert relative < 1e-6, relative  # on the CPU, a resumed run repeats the uninterrupted one


def test_zero_optimizer_state_gives_every_parameter_its_own_step(monkeypatch):
    """The gathering of ZeRO moments, on the state layout ZeRO keeps (one step tensor shared by its flat group),
    with deepspeed's gather function standing in (deepspeed is not installed in the test environment)."""
    import torch

    from mtu.training.checkpoint import zero_optimizer_state

    params = [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4))]
    moments = {id(p): {"exp_avg": torch.full_like(p, i + 1.0), "exp_avg_sq": torch.full_like(p, 10.0 * (i + 1))}
               for i, p in enumerate(params)}
    utils = SimpleNamespace(safe_get_full_optimizer_state=lambda param, key: moments[id(param)][key])
    monkeypatch.setitem(sys.modules, "deepspeed", SimpleNamespace(utils=utils))
    monkeypatch.setitem(sys.modules, "deepspeed.utils", utils)
    shared_step = torch.tensor(7.0)
    flat = torch.nn.Parameter(torch.zeros(10))
    base = SimpleNamespace(state={flat: {"step": shared_step, "exp_avg": torch.zeros(10)}},
                           param_groups=[{"params": [flat], "lr": 0.1, "betas": (0.9, 0.999)}])
    optimizer = SimpleNamespace(optimizer=SimpleNamespace(optimizer=base))
    state = zero_optimizer_state(optimizer, params)
    steps = [state["state"][i]["step"] for i in range(2)]
    assert [float(s) for s in steps] == [7.0, 7.0]
    assert len({s.untyped_storage().data_ptr() for s in steps + [shared_step]}) == 3, "each step its own tensor"
    assert torch.equal(state["state"][1]["exp_avg_sq"], torch.full((4,), 20.0))
    assert state["param_groups"] == [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1]}]


def test_deepspeed_runs_on_the_cpu_instead_of_falling_back(monkeypatch):
    """Under `accelerate launch --use_deepspeed` on a machine without a GPU the trainer no longer passes
    accelerate `cpu=True`, which silently turned the run into plain gloo processes (MULTI_CPU)."""
    import mtu.training.trainer as trainer_module

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert trainer_module._deepspeed_launch()
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    assert not trainer_module._deepspeed_launch()
