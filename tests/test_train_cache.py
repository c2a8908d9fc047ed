"""`mtu cache`: training from cached latents (and text embeddings) matches training that encodes on the fly."""

from pathlib import Path

import pytest
from safetensors.torch import load_file

from mtu.training import config_from_dict, train
from mtu.training.cache import build_cache

from .training_parts import tiny_run_config


def _weights(run: Path) -> dict:
    return load_file(str(run / "final" / "mtu_model.safetensors"))


@pytest.mark.parametrize("text", [False, True], ids=["latents", "latents+text"])
def test_cached_training_matches_on_the_fly(tmp_path, text):
    plain = tiny_run_config(tmp_path, max_steps=3, checkpoint_every=0)
    plain["output_dir"] = str(tmp_path / "plain")
    train(config_from_dict(plain))
    cached = dict(plain, output_dir=str(tmp_path / "cached"), cache_dir=str(tmp_path / "cache"))
    build_cache(config_from_dict(cached), tmp_path / "cache", epochs=2, text=text)
    summary = train(config_from_dict(cached))
    assert summary["steps"] == 3
    expected, actual = _weights(tmp_path / "plain"), _weights(tmp_path / "cached")
    # The VAE encodes chunks of 8 when caching and micro-batches on the fly: equal up to float rounding.
    assert max((actual[k] - expected[k]).abs().max() for k in expected) < 1e-4


def test_cache_for_other_sources_is_refused(tmp_path):
    config = tiny_run_config(tmp_path, max_steps=1)
    build_cache(config_from_dict(config), tmp_path / "cache")
    config["data"] = config["data"][:1]
    config["cache_dir"] = str(tmp_path / "cache")
    with pytest.raises(ValueError, match="made for another base or other data sources"):
        train(config_from_dict(config))


def test_missing_cache_is_named(tmp_path):
    config = tiny_run_config(tmp_path, max_steps=1, cache_dir=str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="holds no cache"):
        train(config_from_dict(config))


def test_cache_epochs_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="`epochs` must be >= 1, got 0"):
        build_cache(config_from_dict(tiny_run_config(tmp_path)), tmp_path / "cache", epochs=0)
