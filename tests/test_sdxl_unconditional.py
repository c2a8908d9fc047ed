"""SDXL's unconditional branch is the same in training (conditioning dropout) and sampling, and an fp16 run keeps
a `force_upcast` VAE in float32 (issue 12, point 3). Tiny SDXL parts, no downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtu.pipelines import MTUStableDiffusionXLPipeline
from mtu.training import Trainer, config_from_dict

from .test_pipeline_mtu import one_thread, unet_calls  # noqa: F401 (one_thread: autouse fixture)
from .training_parts import tiny_run_config, tiny_sdxl_pipeline_folder


def _set_force_zeros(base: Path, value: bool) -> None:
    index = json.loads((base / "model_index.json").read_text())
    index["force_zeros_for_empty_prompt"] = value
    (base / "model_index.json").write_text(json.dumps(index))


def _training_text(tmp_path: Path, base: Path):
    """One SDXL training step with dropout 1/3 (text dropped for u < 2/3): the UNet's (hidden, pooled) of every
    sample whose text was dropped, and the adapter the run wrote."""
    config = tiny_run_config(tmp_path, max_steps=1, checkpoint_every=0, batch_size=4, conditioning_dropout=1 / 3)
    config["model"]["base"] = str(base)
    config["output_dir"] = str(tmp_path / "run")
    trainer = Trainer(config_from_dict(config))
    prompts_seen = []
    encode = trainer.encode_text

    def recording(prompts, tasks=None):
        prompts_seen.append(list(prompts))
        return encode(prompts, tasks)

    trainer.encode_text = recording  # micro_step_loss receives the bound attribute
    with unet_calls(trainer.accelerator.unwrap_model(trainer.model)) as calls:
        summary = trainer.train()
    (_, hidden, added), = calls
    (prompts,), = [prompts_seen]
    dropped = [i for i, prompt in enumerate(prompts) if prompt == ""]  # the data's t2i/edit prompts are not empty
    assert dropped, "no sample's text was dropped at this seed; the check would be empty"
    return hidden[dropped], added["text_embeds"][dropped], summary["final"]


def _sampling_negative(pipe):
    """(hidden, pooled) of the negative branch the pipeline samples t2i with (no `negative_prompt`)."""
    with unet_calls(pipe.unet) as calls:
        pipe("t2i", prompt="a red square", num_inference_steps=1, guidance_scale=5.0, output_type="latent",
             generator=torch.Generator().manual_seed(0))
    (_, hidden, added), = calls
    return hidden[0], added["text_embeds"][0]  # BRANCHES["text"]: negative first


@pytest.mark.parametrize("trained_with, sampled_with", [(True, True), (False, True)],
                         ids=["zeros", "empty-prompt-then-base-says-zeros"])
def test_sdxl_sampling_negative_equals_training_dropout(tmp_path, trained_with, sampled_with):
    """The pipeline's negative branch for a trained adapter is what the trainer's dropout fed the UNet, hidden
    states and pooled `text_embeds` alike: zeros for an SDXL base with `force_zeros_for_empty_prompt`, the encoded
    "" without it. The adapter records the choice, and the pipeline follows the record even when the base folder
    it is later loaded with says otherwise."""
    base = tiny_sdxl_pipeline_folder(tmp_path)
    _set_force_zeros(base, trained_with)
    hidden, pooled, adapter = _training_text(tmp_path, base)
    _set_force_zeros(base, sampled_with)
    pipe = MTUStableDiffusionXLPipeline.from_pretrained(adapter)
    pipe.set_progress_bar_config(disable=True)
    negative_hidden, negative_pooled = _sampling_negative(pipe)
    for row_hidden, row_pooled in zip(hidden, pooled):
        torch.testing.assert_close(row_hidden, negative_hidden, atol=1e-5, rtol=0)
        torch.testing.assert_close(row_pooled, negative_pooled, atol=1e-5, rtol=0)
    assert bool(negative_hidden.abs().max() == 0) == bool(negative_pooled.abs().max() == 0) == trained_with
    record = json.loads((Path(adapter) / "mtu_config.json").read_text())
    assert record["unconditional_text"] == ("zeros" if trained_with else "empty_prompt")
    assert pipe.config.force_zeros_for_empty_prompt == trained_with
    # The folded task's stock diffusers pipeline gets the same choice.
    assert pipe.fold("t2i").config.force_zeros_for_empty_prompt == trained_with


def test_recorded_choice_survives_load_and_save(tmp_path):
    """`load_mtu` restores what the adapter records, `save_pretrained` writes it again, and a pipeline built on the
    loaded model follows it; a model without the record keeps the default (zeros)."""
    import mtu

    from .sdxl_parts import tiny_sdxl_components, tiny_sdxl_unet

    model = mtu.upcycle(tiny_sdxl_unet(), mtu.MTUConfig(tasks=["t2i"], num_experts=2))
    assert MTUStableDiffusionXLPipeline(**tiny_sdxl_components(model, tmp_path)).config.force_zeros_for_empty_prompt
    model.unconditional_text = "empty_prompt"
    model.save_pretrained(tmp_path / "a")
    loaded = mtu.load_mtu(tmp_path / "a", base=tiny_sdxl_unet())
    assert loaded.unconditional_text == "empty_prompt"
    loaded.save_pretrained(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "mtu_config.json").read_text())["unconditional_text"] == "empty_prompt"
    pipe = MTUStableDiffusionXLPipeline(**tiny_sdxl_components(loaded, tmp_path))
    assert pipe.config.force_zeros_for_empty_prompt is False


def test_fp16_keeps_a_force_upcast_vae_in_float32(tmp_path):
    """Under fp16 the frozen parts go to float16 except a VAE whose config has `force_upcast` (SDXL's overflows in
    float16; diffusers' pipelines and SDXL training scripts run it in float32), and the training step encodes
    targets and image conditions with it in float32. A VAE without `force_upcast` follows the run's dtype."""
    from mtu.training.components import load_frozen_parts
    from mtu.training.step import _conditioning, _target_moments

    parts = load_frozen_parts(str(tiny_sdxl_pipeline_folder(tmp_path)))
    assert parts.vae.config.force_upcast
    parts.to("cpu", torch.float16)
    assert parts.vae.dtype == torch.float32
    assert parts.text_encoder.dtype == parts.text_encoder_2.dtype == torch.float16
    inputs = []
    handle = parts.vae.encoder.register_forward_pre_hook(lambda module, args: inputs.append(args[0].dtype))
    try:
        batch = {"target": torch.rand(2, 3, 16, 16) * 2 - 1, "condition": torch.rand(2, 3, 16, 16) * 2 - 1,
                 "mask": torch.zeros(2, 1, 16, 16), "task": ["edit", "edit"]}
        mean, std = _target_moments(parts, batch, torch.float16)
        channels = _conditioning(parts, batch, torch.ones(2, dtype=torch.bool), 4, (8, 8), torch.float16)
    finally:
        handle.remove()
    assert inputs == [torch.float32, torch.float32]
    assert mean.dtype == torch.float32 and torch.isfinite(mean).all() and torch.isfinite(std).all()
    assert channels.dtype == torch.float16 and channels.shape == (2, 4, 8, 8)

    parts.vae.register_to_config(force_upcast=False)
    parts.to("cpu", torch.float16)
    assert parts.vae.dtype == torch.float16
