"""The shipped base: a stock diffusers pipeline folder within the size budget, whose text-to-image faithfulness
is the figure recorded with its recipe (re-measured here on the first evaluation batch, image by image)."""

import json

import pytest
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline

from mtu.toyworld.components import shipped_base
from mtu.toyworld.pretrain import EVAL_BATCH, PretrainConfig, evaluate_t2i, pretrain

MAX_BYTES = 20 * 2 ** 20


def test_shipped_base_is_small_and_documented():
    folder = shipped_base()
    weights = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert weights <= MAX_BYTES, f"the shipped base is {weights / 2 ** 20:.1f} MiB, over 20 MiB"
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))  # safetensors only
    recipe = json.loads((folder / "recipe.json").read_text())
    evaluation = recipe["evaluation"]
    assert recipe["recipe"]["seed"] == 0 and recipe["command"].startswith("mtu toyworld pretrain")
    assert len(evaluation["outcomes"]) == evaluation["count"]
    assert evaluation["faithfulness"] == sum(evaluation["outcomes"]) / evaluation["count"]


def test_shipped_base_loads_in_stock_diffusers_with_its_recorded_faithfulness():
    folder = shipped_base()
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    recorded = json.loads((folder / "recipe.json").read_text())["evaluation"]
    measured = evaluate_t2i(pipe, count=EVAL_BATCH, seed=recorded["seed"])
    assert measured["outcomes"] == recorded["outcomes"][:EVAL_BATCH]


def test_shipped_base_swaps_to_ddim_without_clipping_latents():
    """Stable Diffusion's scheduler configs say `clip_sample: false`; without it, DDIM and DDPM made from the
    base's config clamp the predicted latents to [-1, 1] (they span about +-3) and every output is ruined."""
    config = StableDiffusionPipeline.from_pretrained(shipped_base(), local_files_only=True).scheduler.config
    for scheduler in (DDIMScheduler.from_config(config), DDPMScheduler.from_config(config)):
        assert scheduler.config.clip_sample is False
    assert DDIMScheduler.from_config(config).config.set_alpha_to_one is False


def test_pretrain_recipe_writes_a_loadable_pipeline(tmp_path):
    record = pretrain(PretrainConfig(out=str(tmp_path / "base"), scenes=64, vae_steps=2, vae_batch=4, steps=2,
                                     batch=4, eval_count=4))
    assert set(record["evaluation"]) >= {"faithfulness", "outcomes", "count"}
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "base", local_files_only=True)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype
    assert DDIMScheduler.from_config(pipe.scheduler.config).config.clip_sample is False
    assert json.loads((tmp_path / "base" / "recipe.json").read_text())["recipe"]["steps"] == 2
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # staging folders cleaned up


def test_pretrain_refuses_bad_options():
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1, got 0"):
        PretrainConfig(steps=0)
    with pytest.raises(ValueError, match=r"`lr` must be a number > 0, got -0.1"):
        PretrainConfig(lr=-0.1)
    with pytest.raises(ValueError, match=r"`ema_decay` must be a number in \[0, 1.0\), got 1.5"):
        PretrainConfig(ema_decay=1.5)
    with pytest.raises(ValueError, match=r"`partial_caption_fraction` must be a number in \[0, 1.0\), got -0.5"):
        PretrainConfig(partial_caption_fraction=-0.5)


@pytest.mark.parametrize("fraction, calls", [(0.0, 0), (0.99, 8)])
def test_pretrain_trains_on_partial_captions_at_their_fraction(tmp_path, monkeypatch, fraction, calls):
    import mtu.toyworld.pretrain as module

    made = []
    monkeypatch.setattr(module, "partial_caption", lambda scene, rng: made.append(scene) or "a circle")
    base = shipped_base()
    module.pretrain(PretrainConfig(out=str(tmp_path / "next"), scenes=64, steps=2, batch=4, warmup=1,
                                   empty_prompt_fraction=0.0, partial_caption_fraction=fraction, eval_count=4,
                                   vae_from=str(base), init_from=str(base), device="cpu"))
    assert len(made) in range(calls - 1, calls + 1)  # each of the 2 x 4 captions with probability `fraction`


def test_pretrain_cli_errors_are_one_line(capsys):
    from mtu.cli import main

    assert main(["toyworld", "pretrain", "--stepz", "3"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("mtu: error: unknown pretrain option(s) --stepz;") and "\n" not in error
    assert main(["toyworld", "pretrain", "--resolution", "48"]) == 2
    assert capsys.readouterr().err.strip() == "mtu: error: `resolution` must be 32 or 64, got 48."


def test_pretrain_continues_from_a_pipeline_and_reuses_its_vae(tmp_path):
    """`vae_from` copies the VAE unchanged; `init_from` starts stage 2 from that UNet (a fresh init would be far)."""
    from safetensors.torch import load_file

    base = shipped_base()
    pretrain(PretrainConfig(out=str(tmp_path / "next"), scenes=64, steps=2, batch=4, lr=1e-2, warmup=1,
                            ema_decay=0.0, eval_count=4, vae_from=str(base), init_from=str(base), device="cpu"))
    weights = "diffusion_pytorch_model.safetensors"
    old_vae, new_vae = load_file(base / "vae" / weights), load_file(tmp_path / "next" / "vae" / weights)
    assert all((old_vae[k] == new_vae[k]).all() for k in old_vae)
    old_unet, new_unet = load_file(base / "unet" / weights), load_file(tmp_path / "next" / "unet" / weights)
    moved = max(float((old_unet[k].float() - new_unet[k].float()).abs().max()) for k in old_unet)
    assert 0 < moved < 0.1, moved


def test_pretrain_refuses_bad_sources_and_devices(tmp_path):
    with pytest.raises(ValueError, match="`init_from` must be a pipeline folder with unet/ and text_encoder/"):
        PretrainConfig(init_from=str(tmp_path))
    with pytest.raises(ValueError, match="`vae_from` must be a pipeline folder with vae/"):
        PretrainConfig(vae_from=str(tmp_path))
    with pytest.raises(ValueError, match="`device` must be 'auto', 'cpu' or 'cuda\\[:N\\]', got 'tpu'"):
        PretrainConfig(device="tpu")
