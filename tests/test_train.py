"""The trainer end to end on the tiny pipeline: methods, per-task losses, checkpoints, exact resume, guards."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import mtu
from mtu.training import config_from_dict, load_train_config, train
from mtu.training.checkpoint import list_checkpoints, load_checkpoint
from mtu.training.config import MTUSection

from .training_parts import tiny_run_config


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("train")


def _config(root, name, **overrides):
    config = tiny_run_config(root, **overrides)
    config["output_dir"] = str(Path(root) / name)
    return config_from_dict(config)


def test_mtu_run_logs_per_task_losses_and_saves_an_adapter(workspace):
    summary = train(_config(workspace, "basic"))
    assert summary["steps"] == 4 and summary["nonfinite_skipped"] == 0
    tasks_logged = {key for row in summary["history"] for key in row if key.startswith("loss/")}
    assert tasks_logged == {"loss/t2i", "loss/edit"}
    model = mtu.load_mtu(summary["final"])
    assert model.task_names == ["t2i", "edit"]
    saved = yaml.safe_load((workspace / "basic" / "config.yaml").read_text())
    assert saved["model"]["mtu"] == MTUSection(num_experts=2).to_dict() and saved["optim"]["lr"] == 1e-3


def test_training_changes_only_trainable_weights(workspace):
    summary = train(_config(workspace, "changes"))
    model = mtu.load_mtu(summary["final"])
    fresh = mtu.upcycle(mtu.load_base_unet(str(workspace / "tiny-sd")), model.mtu_config)
    moved = [name for (name, a), (_, b) in zip(model.mtu_named_parameters(), fresh.mtu_named_parameters())
             if not torch.equal(a, b)]
    assert any(".ff.w_in" in name for name in moved) and any("conv_in.convs.edit" in name for name in moved)


@pytest.mark.parametrize("method", ["full", "lora", "ia3", "lora_shared", "ia3_shared"])
def test_baselines_train(workspace, method):
    from mtu.training.methods import load_baseline

    summary = train(_config(workspace, f"method-{method}", model={"method": method}, max_steps=2))
    weights = load_file(str(Path(summary["final"]) / "trainable.safetensors"))
    # lora / ia3: one adapter per task (Table 3's task-specific adapters); *_shared: one for both tasks.
    markers = {"full": ["attn1.to_q.weight"], "lora": ["lora_A.t2i.", "lora_A.edit."],
               "ia3": ["ia3_l.t2i", "ia3_l.edit"], "lora_shared": ["lora_A.default."],
               "ia3_shared": ["ia3_l.default"]}[method]
    for marker in markers:
        assert any(marker in name for name in weights), marker
    assert not any(".default" in name for name in weights) or method.endswith("_shared")
    model = load_baseline(summary["final"])  # on the base method.json records
    params = dict(model.named_parameters())
    assert all(torch.equal(params[name], tensor) for name, tensor in weights.items())


def test_checkpoint_holds_full_state_and_prunes(workspace):
    config = _config(workspace, "ckpt", ema_decay=0.9, keep_checkpoints=1)
    train(config)
    checkpoints = list_checkpoints(config.output_dir)
    assert [p.name for p in checkpoints] == ["checkpoint-0000004"]
    step, state = load_checkpoint(checkpoints[0])
    assert step == 4
    assert {"trainable", "optimizer", "lr_scheduler", "ema", "rng", "counters", "data"} <= set(state)
    assert state["optimizer"]["state"] and all(isinstance(k, int) for k in state["optimizer"]["state"])
    assert state["backend"] == "NO"  # what wrote it (a DeepSpeed checkpoint warns when resumed)
    assert not list(Path(config.output_dir, "checkpoints").glob("*.tmp"))


def test_checkpoint_keeps_tensors_that_share_memory(tmp_path):
    # DeepSpeed's ZeRO optimizer gives every group's state one `step` tensor; safetensors refuses shared memory.
    from mtu.training.checkpoint import save_checkpoint

    step, base = torch.tensor(7.0), torch.arange(6.0)
    state = {"optimizer": {"state": {0: {"step": step, "exp_avg": base[:3]}, 1: {"step": step, "exp_avg": base[3:]}}},
             "whole": base, "empty": [torch.empty(0), torch.empty(0)]}
    _, loaded = load_checkpoint(save_checkpoint(tmp_path, 1, state, keep=1))
    groups = loaded["optimizer"]["state"]
    assert groups[0]["step"] is groups[1]["step"] and groups[0]["step"].item() == 7.0  # one tensor, as saved
    assert groups[0]["exp_avg"].tolist() == [0.0, 1.0, 2.0] and groups[1]["exp_avg"].tolist() == [3.0, 4.0, 5.0]
    assert loaded["whole"].tolist() == base.tolist() and [t.numel() for t in loaded["empty"]] == [0, 0]


def _final_weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "final" / "mtu_model.safetensors"))


def test_resume_after_sigkill_is_bitwise_exact(workspace):
    """A run killed with SIGKILL after its first checkpoint and resumed ends with the uninterrupted weights."""
    straight = _config(workspace, "straight", max_steps=6, checkpoint_every=2)
    train(straight)
    config_path = workspace / "killed.yaml"
    killed = tiny_run_config(workspace, max_steps=6, checkpoint_every=2)
    killed["output_dir"] = str(workspace / "killed")
    config_path.write_text(yaml.safe_dump(killed))
    process = subprocess.Popen([sys.executable, "-m", "mtu.cli", "train", "--config", str(config_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list_checkpoints(workspace / "killed"):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = list_checkpoints(workspace / "killed")
    assert done and not (workspace / "killed" / "final").exists(), "the kill came too late to test a resume"
    result = subprocess.run([sys.executable, "-m", "mtu.cli", "train", "--config", str(config_path), "--resume",
                             "auto"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    expected, actual = _final_weights(workspace / "straight"), _final_weights(workspace / "killed")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_resume_with_changed_config_is_refused(workspace):
    train(_config(workspace, "refuse", max_steps=2))
    with pytest.raises(ValueError, match="differing fields: .*max_steps.*optim.lr"):
        train(_config(workspace, "refuse", max_steps=3, optim={"lr": 5e-4}, resume="auto"))


def test_resume_of_a_moved_run_folder_is_exact(workspace):
    """A run folder moved elsewhere (another disk, another machine) resumes from its checkpoint, with its logging
    and checkpointing settings changed, and ends bit for bit where the uninterrupted run did."""
    import shutil

    straight = train(_config(workspace, "move-straight", max_steps=4, checkpoint_every=2, keep_checkpoints=3))
    assert straight["steps"] == 4
    shutil.copytree(workspace / "move-straight", workspace / "move-src")
    shutil.rmtree(workspace / "move-src" / "final")
    shutil.rmtree(workspace / "move-src" / "checkpoints" / "checkpoint-0000004")
    (workspace / "move-src").rename(workspace / "move-dst")
    train(_config(workspace, "move-dst", max_steps=4, checkpoint_every=1, keep_checkpoints=1, log_every=3,
                  resume="auto"))
    expected, actual = _final_weights(workspace / "move-straight"), _final_weights(workspace / "move-dst")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    # A field that changes what is computed still refuses, moved or not.
    with pytest.raises(ValueError, match="differing fields: seed"):
        train(_config(workspace, "move-dst", max_steps=4, checkpoint_every=2, seed=7, resume="auto"))


def test_fresh_run_into_a_used_folder_is_refused(workspace):
    train(_config(workspace, "used", max_steps=2))
    with pytest.raises(ValueError, match="already has checkpoints; pass `--resume auto`"):
        train(_config(workspace, "used", max_steps=2))


def test_nonfinite_losses_are_skipped_then_stop_the_run(workspace, monkeypatch):
    import mtu.training.trainer as trainer_module

    real = trainer_module.micro_step_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        loss, losses = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 2 else loss), losses

    monkeypatch.setattr(trainer_module, "micro_step_loss", sometimes_nan)
    summary = train(_config(workspace, "nan-once", max_steps=3))
    assert summary["nonfinite_skipped"] == 1
    monkeypatch.setattr(trainer_module, "micro_step_loss",
                        lambda *a, **k: (lambda loss, losses: (loss * float("nan"), losses))(*real(*a, **k)))
    with pytest.raises(RuntimeError, match="non-finite for 2 steps in a row"):
        train(_config(workspace, "nan-always", max_steps=5, max_nonfinite_steps=2))


def test_presets_and_overrides(workspace):
    path = workspace / "preset.yaml"
    config = tiny_run_config(workspace)
    config.pop("optim")
    path.write_text(yaml.safe_dump({**config, "preset": "sdxl"}))
    resolved = load_train_config(path, ["--optim.lr", "2e-5", "--max_steps=7"])
    assert (resolved.optim.optimizer, resolved.optim.lr, resolved.optim.weight_decay) == ("adamw", 2e-5, 0.01)
    assert resolved.max_steps == 7
    assert load_train_config(path).optim.lr == 5e-5


@pytest.mark.parametrize("override, message", [
    (["--max_steps", "0"], "^max_steps: must be an integer >= 1, got 0"),
    (["--model.method", "dora"], "^model.method: must be one of .*got 'dora'"),
    (["--optim.lr", "-1"], "^optim.lr: must be a finite number > 0, got -1"),
    (["--mixed_precision", "fp8"], "^mixed_precision: must be one of"),
    (["--conditioning_dropout", "0.5"], "^conditioning_dropout: must be a finite number in \\[0, 1/3\\], got 0.5"),
    (["--model.mtu.tasks", "[t2i]"], "^model.mtu.tasks: .*the tasks are those of the `data` sources"),
])
def test_bad_config_values(workspace, override, message):
    path = workspace / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(workspace)))
    with pytest.raises(ValueError, match=message):
        load_train_config(path, override)


def test_cli_train_error_is_one_line(workspace):
    result = subprocess.run([sys.executable, "-m", "mtu.cli", "train", "--config", str(workspace / "nope.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "mtu: error: `--config` file" in result.stderr


def test_sources_with_different_resolutions_are_refused(workspace):
    config = tiny_run_config(workspace)
    config["data"][1]["resolution"] = 32
    config["output_dir"] = str(workspace / "res")
    with pytest.raises(ValueError, match="must share one `resolution`.*\\[16, 32\\]"):
        train(config_from_dict(config))
