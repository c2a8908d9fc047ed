"""The trainer's public view of a run (issue 13.3): `trained_model` (with and without EMA), `train_step`,
`num_trainable_parameters`, `device`; and a run never ends on, or saves, non-finite numbers (issue 13.7)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mtu.errors import InputError
from mtu.training import Trainer, config_from_dict

from .training_parts import tiny_run_config


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("trainer-api")


def _trainer(root: Path, name: str, **overrides) -> Trainer:
    config = tiny_run_config(root, **{"max_steps": 2, "checkpoint_every": 0, **overrides})
    config["output_dir"] = str(root / name)
    return Trainer(config_from_dict(config))


def _trainable(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}


def test_trained_model_with_ema_is_what_export_wrote_and_without_it_the_last_step(workspace):
    trainer = _trainer(workspace, "ema", ema_decay=0.5, optim={"lr": 1e-2})
    summary = trainer.train()
    exported = load_file(str(Path(summary["final"]) / "mtu_model.safetensors"))
    model = trainer.trained_model(ema=True)
    assert model.device.type == "cpu" and not model.training
    ema = _trainable(model)
    assert ema.keys() == exported.keys() and all(torch.equal(ema[name], exported[name]) for name in ema)
    live = _trainable(trainer.trained_model(ema=False))
    assert any(not torch.equal(live[name], ema[name]) for name in ema), "EMA and last-step weights should differ"
    again = _trainable(trainer.trained_model(ema=True))  # switching back gives the EMA weights again
    assert all(torch.equal(again[name], ema[name]) for name in ema)
    assert all(torch.equal(param, live[name]) for name, param in _trainable(trainer.trained_model(ema=False)).items())
    assert trainer.num_trainable_parameters() == sum(tensor.numel() for tensor in exported.values())


def test_trained_model_without_ema_is_the_exported_model(workspace):
    trainer = _trainer(workspace, "plain")
    summary = trainer.train()
    exported = load_file(str(Path(summary["final"]) / "mtu_model.safetensors"))
    for ema in (True, False):  # no EMA kept: both are the last step's weights
        weights = _trainable(trainer.trained_model(ema=ema))
        assert all(torch.equal(weights[name], exported[name]) for name in exported)


def test_train_step_runs_one_step(workspace):
    trainer = _trainer(workspace, "steps")
    before = _trainable(trainer.trained_model(ema=False))  # on the CPU, where this test trains anyway
    record = trainer.train_step()
    assert trainer.step == 1 and record["finite"] and set(record["per_task"]) <= {"t2i", "edit"}
    after = _trainable(trainer.trained_model(ema=False))
    assert any(not torch.equal(after[name], before[name]) for name in before)


def _nan_from_step(monkeypatch, first: int) -> None:
    import mtu.training.trainer as trainer_module

    real, calls = trainer_module.micro_step_loss, {"n": 0}

    def loss(*args, **kwargs):
        value, losses = real(*args, **kwargs)
        calls["n"] += 1
        return (value * float("nan") if calls["n"] >= first else value), losses

    monkeypatch.setattr(trainer_module, "micro_step_loss", loss)


def test_a_run_does_not_end_on_a_skipped_nonfinite_step(workspace, monkeypatch):
    # max_nonfinite_steps lets the last two steps be skipped; the run must still not end (or export) as if fine.
    _nan_from_step(monkeypatch, first=2)
    trainer = _trainer(workspace, "nan-end", max_steps=3, max_nonfinite_steps=5)
    with pytest.raises(InputError, match="the loss was non-finite at the last step \\(3; 2 step\\(s\\) skipped"):
        trainer.train()
    assert not (workspace / "nan-end" / "final").exists()


def test_too_many_nonfinite_steps_in_a_row_stop_with_one_line(workspace, monkeypatch):
    _nan_from_step(monkeypatch, first=1)
    trainer = _trainer(workspace, "nan-row", max_steps=5, max_nonfinite_steps=2)
    with pytest.raises(InputError, match="the loss was non-finite for 2 steps in a row \\(at step 1\\)"):
        trainer.train()  # an InputError: `mtu train` prints it as one line, not as a bug's traceback


def test_nonfinite_weights_are_never_saved(workspace):
    # What an infinite learning rate does (the config refuses one; a run can still diverge): finite loss at step 1,
    # then infinite weights; later steps would be skipped as non-finite until the run ends.
    trainer = _trainer(workspace, "inf-lr", max_steps=3, checkpoint_every=1)
    for group in trainer.optimizer.param_groups:
        group["lr"] = float("inf")
    trainer.lr_scheduler.base_lrs = [float("inf")] * len(trainer.lr_scheduler.base_lrs)
    with pytest.raises(InputError, match="trainable weight '.*' is not finite after step 1; nothing was saved"):
        trainer.train()
    assert not (workspace / "inf-lr" / "checkpoints").exists() and not (workspace / "inf-lr" / "final").exists()


def test_resuming_from_a_checkpoint_with_nan_weights_is_refused(workspace):
    _trainer(workspace, "resume", checkpoint_every=2).train()
    tensors_path = next((workspace / "resume" / "checkpoints").glob("checkpoint-*")) / "state.safetensors"
    tensors = load_file(str(tensors_path))
    name = next(key for key in sorted(tensors) if key.startswith("state.trainable."))
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(tensors_path))
    trainer = _trainer(workspace, "resume", checkpoint_every=2, resume="auto")
    with pytest.raises(InputError, match=f"{tensors_path.parent}: tensor '.*' holds 1 NaN"):
        trainer.train()


# -- what the trainer builds for a baseline (issue 13.3) ---------------------------------------------------------
@pytest.mark.parametrize("method", ["full", "lora", "ia3_shared"])
def test_baselines_are_their_own_model_types(tiny_base, method):
    import copy

    from mtu import MTUModel
    from mtu.training.config import ModelConfig
    from mtu.training.methods import BaselineModel, build_model
    from mtu.upcycling import TaskModel

    model = build_model(copy.deepcopy(tiny_base), ModelConfig(base="random:tiny", method=method), ["t2i", "edit"])
    assert isinstance(model, BaselineModel) and isinstance(model, TaskModel) and not isinstance(model, MTUModel)
    assert not hasattr(model, "task_embeddings") and not hasattr(model, "mtu_config")


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_peft_baselines_train_what_peft_declares_not_what_names_say(tiny_base, method):
    import copy

    from peft.tuners.tuners_utils import BaseTunerLayer
    from torch import nn

    from mtu.training.config import ModelConfig
    from mtu.training.methods import build_model, trainable_parameters

    unet = copy.deepcopy(tiny_base)
    # Base weights whose names look like adapter weights: a name match would train them.
    unet.mid_block.register_parameter(f"{method}_lookalike", nn.Parameter(torch.ones(3)))
    unet.conv_out.register_parameter("lora_A_bias", nn.Parameter(torch.zeros(3)))
    model = build_model(unet, ModelConfig(base="random:tiny", method=method), ["t2i", "edit"])
    trained = set(trainable_parameters(model))
    assert not any("lookalike" in name or "lora_A_bias" in name for name in trained)
    declared = set()
    for layer_name, layer in model.unet.named_modules():
        if isinstance(layer, BaseTunerLayer):
            for attribute in layer.adapter_layer_names:
                for adapter, item in getattr(layer, attribute).items():
                    names = [f"{attribute}.{adapter}"] if isinstance(item, nn.Parameter) else \
                        [f"{attribute}.{adapter}.{name}" for name, _ in item.named_parameters()]
                    declared |= {f"unet.{layer_name}.{name}" for name in names}
    convs = {name for name, _ in model.named_parameters() if name.startswith("unet.conv_in.")}
    assert declared and trained == declared | convs
