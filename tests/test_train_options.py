"""Trainer options: bf16 mixed precision with fp32 trainable weights, gradient accumulation, checkpointing, EMA."""

import pytest
import torch

from mtu.training import Trainer, config_from_dict, train

from .training_parts import assert_same_training, tiny_run_config


def _config(root, name, **overrides):
    config = tiny_run_config(root, **{"max_steps": 2, "checkpoint_every": 0, **overrides})
    config["output_dir"] = str(root / name)
    return config_from_dict(config)


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one process-wide state; a run with other precision settings needs it reset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_keeps_trainable_weights_in_fp32(tmp_path, fresh_accelerate):
    trainer = Trainer(_config(tmp_path, "bf16", mixed_precision="bf16"))
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    frozen = [p for p in trainer.model.parameters() if not p.requires_grad]
    assert all(p.dtype == torch.float32 for p in trainable)
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    summary = trainer.train()
    assert summary["nonfinite_skipped"] == 0 and all(torch.isfinite(torch.tensor(r["loss"])) for r in summary["history"])


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    """2 micro-batches of 2 see the samples and noise of one batch of 4, and end with the same weights."""
    train(_config(tmp_path, "big", batch_size=4, max_steps=3))
    train(_config(tmp_path, "accumulated", batch_size=2, gradient_accumulation_steps=2, max_steps=3))
    relative = assert_same_training(tmp_path / "big", tmp_path / "accumulated", str(tmp_path / "tiny-sd"))
    print(f"accumulation 2x2 vs batch 4: relative weight difference {relative:.2e}")


@pytest.mark.parametrize("options", [{"gradient_checkpointing": True}, {"ema_decay": 0.5}],
                         ids=["checkpointing", "ema"])
def test_option_runs(tmp_path, options):
    summary = train(_config(tmp_path, "opt", **options))
    assert summary["steps"] == 2


def test_validation_images_per_task(tmp_path):
    from PIL import Image

    config = tiny_run_config(tmp_path, max_steps=2, checkpoint_every=0, validate_every=2)
    config["data"].append({"task": "sr", "format": "folder", "path": config["data"][0]["path"],
                           "schema": "sr_highres", "resolution": 16})
    config["output_dir"] = str(tmp_path / "val")
    train(config_from_dict(config))
    folder = tmp_path / "val" / "validation" / "step-0000002"
    assert sorted(p.name for p in folder.iterdir()) == ["edit.png", "sr.png", "t2i.png"]
    assert Image.open(folder / "edit.png").size == (48, 16)  # condition | generated | target
    assert Image.open(folder / "t2i.png").size == (32, 16)


def test_sdxl_base_trains_with_the_sdxl_preset(tmp_path):
    """Two text encoders, pooled embeddings and size ids reach the UNet; preset sdxl = AdamW 5e-5, wd 0.01."""
    from mtu.training import load_train_config

    from .training_parts import tiny_sdxl_pipeline_folder

    config = tiny_run_config(tmp_path, max_steps=2, checkpoint_every=0)
    config["model"]["base"] = str(tiny_sdxl_pipeline_folder(tmp_path))
    config.pop("optim")
    config.update(preset="sdxl", output_dir=str(tmp_path / "xl"))
    import yaml

    (tmp_path / "xl.yaml").write_text(yaml.safe_dump(config))
    resolved = load_train_config(tmp_path / "xl.yaml")
    assert (resolved.optim.optimizer, resolved.optim.lr, resolved.optim.weight_decay) == ("adamw", 5e-5, 0.01)
    summary = train(resolved)
    assert summary["steps"] == 2 and summary["nonfinite_skipped"] == 0


def test_guidance_dropout_rates():
    """5% text only, 5% both, 5% image only; never for tasks without a prompt."""
    from mtu.training.step import guidance_dropout

    draws = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    drop_text, keep_image = guidance_dropout(draws, torch.ones_like(draws, dtype=torch.bool), 0.05)
    rates = {"text only": (drop_text & keep_image).float().mean(), "both": (drop_text & ~keep_image).float().mean(),
             "image only": (~drop_text & ~keep_image).float().mean()}
    for name, rate in rates.items():
        assert abs(rate - 0.05) < 0.003, (name, rate)
    drop_text, keep_image = guidance_dropout(draws, torch.zeros_like(draws, dtype=torch.bool), 0.05)
    assert not drop_text.any() and keep_image.all()


def test_tensorboard_logs_per_task_losses(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_run_config(tmp_path, max_steps=2, checkpoint_every=0, log_with="tensorboard")
    config["output_dir"] = str(tmp_path / "tb")
    train(config_from_dict(config))
    events = list((tmp_path / "tb" / "logs").rglob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"loss", "lr"} <= tags and any(tag.startswith("loss/") for tag in tags)


def test_min_snr_weights_follow_the_formula():
    from diffusers import DDPMScheduler

    from mtu.training.step import min_snr_weights

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    timesteps = torch.tensor([0, 20, 100, 400, 999])
    alpha_bar = scheduler.alphas_cumprod[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    expected = torch.minimum(snr, torch.tensor(5.0)) / snr
    assert torch.allclose(min_snr_weights(scheduler, timesteps, 5.0), expected, rtol=1e-5)
    weights = min_snr_weights(scheduler, timesteps, 5.0)
    assert weights[-1] == 1.0 and weights[0] < 0.01
    v_scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction")
    expected_v = torch.minimum(snr, torch.tensor(5.0)) / (snr + 1)
    assert torch.allclose(min_snr_weights(v_scheduler, timesteps, 5.0), expected_v, rtol=1e-5)


def test_snr_gamma_changes_the_update_and_is_checked(tmp_path):
    from safetensors.torch import load_file

    train(_config(tmp_path, "plain"))
    train(_config(tmp_path, "snr", snr_gamma=1e-3))  # every sample reweighted (5 would spare t >= ~150)
    plain = load_file(next((tmp_path / "plain" / "final").glob("*.safetensors")))
    snr = load_file(next((tmp_path / "snr" / "final").glob("*.safetensors")))
    assert max(float((plain[k] - snr[k]).abs().max()) for k in plain) > 0
    with pytest.raises(ValueError, match=r"^snr_gamma: must be a finite number > 0, or null, got 0\.$"):
        _config(tmp_path, "bad", snr_gamma=0)


def test_fp16_on_the_cpu_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """accelerate autocasts only bf16 on the CPU: fp16 crashed mid-run (Float vs Half matmul); now one line, first."""
    import mtu.training.trainer as trainer_module
    from mtu.errors import InputError

    monkeypatch.setattr(trainer_module, "_has_accelerator_device", lambda: False)
    config = _config(tmp_path, "fp16", mixed_precision="fp16")
    with pytest.raises(InputError, match=r"^mixed_precision: 'fp16' needs a GPU .* Use 'bf16' or 'no'\.$"):
        Trainer(config)
    assert not (tmp_path / "fp16").exists()


def test_router_lr_gives_the_routers_and_task_embeddings_their_own_rate(tmp_path):
    """`optim.router_lr`: the routers and task embeddings in a second group at their own peak rate (the schedule
    scales both); everything else at `lr`. A checkpointed run with two groups resumes exactly."""
    from mtu.training.trainer import is_router_parameter

    from .training_parts import assert_same_training

    config = _config(tmp_path, "two-rates", optim={"lr": 1e-3, "router_lr": 1e-5}, max_steps=4, checkpoint_every=2,
                     keep_checkpoints=4)
    trainer = Trainer(config)
    main, routers = trainer.optimizer.param_groups
    names = {id(param): name for name, param in trainer.params.items()}
    assert {names[id(p)] for p in routers["params"]} == {n for n in trainer.params if is_router_parameter(n)}
    assert "task_embeddings" in {names[id(p)] for p in routers["params"]}
    assert not any(is_router_parameter(names[id(p)]) for p in main["params"])
    assert routers["initial_lr"] == 1e-5 and main["initial_lr"] == 1e-3
    trainer.train_step()  # the schedule scales both groups alike
    assert routers["lr"] / main["lr"] == pytest.approx(1e-2)
    trainer.train()
    import shutil

    cut = tmp_path / "two-rates-resumed"
    shutil.copytree(tmp_path / "two-rates" / "checkpoints" / "checkpoint-0000002",
                    cut / "checkpoints" / "checkpoint-0000002")
    resumed = _config(tmp_path, "two-rates-resumed", optim={"lr": 1e-3, "router_lr": 1e-5}, max_steps=4,
                      checkpoint_every=2, keep_checkpoints=4, resume="auto")
    train(resumed, overwrite=True)
    assert assert_same_training(tmp_path / "two-rates", cut, config.model.base) < 1e-6
