"""Short names of shipped models (`mtu.shipped`): "toyworld" loads the adapter shipped for the embedded toy-world
base with no other argument, "toyworld-base" that base; an existing path beats a short name; a missing shipped
model is one clear error. The adapter here is a nudged one made in a tmp folder, standing in for the trained one."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch

import mtu
from mtu.cli import main
from mtu.pipelines import MTUPipeline
from mtu.pipelines.common import check_base_location
from mtu import shipped as shipped_names
from mtu.toyworld import components
from mtu.toyworld.components import SHIPPED_BASE_NAME, record_shipped_base, shipped_base
from mtu.upcycling.serialization import CONFIG_NAME, read_adapter_config

from .conftest import nudge
from .test_pipeline_mtu import one_thread  # noqa: F401 (autouse fixture)

TASKS = ["t2i", "edit"]


def make_adapter(folder, base_unet=None):
    """A nudged MTU adapter over the shipped base's UNet (or `base_unet`), saved to `folder`."""
    unet = base_unet if base_unet is not None else mtu.load_base_unet(str(shipped_base()))
    model = mtu.upcycle(unet, mtu.MTUConfig(tasks=TASKS, num_experts=4)).eval()
    nudge(model)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """(folder, in-memory model) of an adapter that records the shipped base by its short name."""
    folder = tmp_path_factory.mktemp("shipped") / "mtu_model"
    model = make_adapter(folder)
    record_shipped_base(folder)
    return folder, model


@pytest.fixture
def shipped(adapter, monkeypatch):
    """The adapter stands in for the shipped model: "toyworld" resolves to its folder."""
    monkeypatch.setattr(shipped_names, "shipped_model", lambda: adapter[0])
    monkeypatch.setattr(components, "shipped_model", lambda: adapter[0])
    return adapter


@pytest.fixture
def not_shipped(monkeypatch, tmp_path):
    """An installation without the shipped model (the package folder holds no adapter)."""
    monkeypatch.setattr(shipped_names, "_package_folder", lambda name: tmp_path / "package" / name)


def t2i(pipe, seed: int = 0) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe("t2i", "a red circle", num_inference_steps=2, height=32, width=32,
                generator=torch.Generator().manual_seed(seed), output_type="np").images


def test_record_shipped_base_rewrites_only_the_base_name(adapter, tmp_path):
    folder = tmp_path / "adapter"
    make_adapter(folder)
    before = json.loads((folder / CONFIG_NAME).read_text())
    assert before["base"]["name_or_path"] == str(shipped_base().resolve())
    assert record_shipped_base(folder) == folder
    after = json.loads((folder / CONFIG_NAME).read_text())
    before["base"]["name_or_path"] = SHIPPED_BASE_NAME
    assert after == before
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_NAME, "mtu_model.safetensors"])


def test_record_shipped_base_refuses_an_adapter_of_other_weights(tmp_path):
    unet = mtu.load_base_unet(str(shipped_base()))
    with torch.no_grad():
        unet.conv_out.bias.add_(0.1)  # same architecture, other weights
    make_adapter(tmp_path / "other", unet)
    config = (tmp_path / "other" / CONFIG_NAME).read_text()
    with pytest.raises(ValueError, match="the base weights differ"):
        record_shipped_base(tmp_path / "other")
    assert (tmp_path / "other" / CONFIG_NAME).read_text() == config


def test_from_pretrained_by_short_name_equals_the_explicit_folders(shipped):
    folder, model = shipped
    pipe = MTUPipeline.from_pretrained("toyworld")
    assert pipe.unet.task_names == TASKS and pipe.unet.base_info["name_or_path"] == SHIPPED_BASE_NAME
    for name, param in pipe.unet.mtu_named_parameters():  # the nudged weights, not a fresh upcycle
        torch.testing.assert_close(param, dict(model.mtu_named_parameters())[name], rtol=0, atol=0)
    explicit = MTUPipeline.from_base(shipped_base(), folder)
    np.testing.assert_array_equal(t2i(pipe, seed=3), t2i(explicit, seed=3))
    assert isinstance(mtu.load_mtu("toyworld"), mtu.MTUModel)  # the recorded "toyworld-base" resolves too


def test_generate_command_by_short_name(shipped, tmp_path, capsys):
    image = tmp_path / "in.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out.png"
    code = main(["generate", "--model", "toyworld", "--task", "edit", "--image", str(image), "--prompt",
                 "remove the square", "--out", str(out), "--steps", "2", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    with PIL.Image.open(out) as written:
        assert written.format == "PNG" and written.size == (32, 32)
    assert main(["inspect", "toyworld", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["adapter"]["base"] == SHIPPED_BASE_NAME and report["adapter"]["weights_bytes"] > 0


def test_an_existing_path_beats_the_short_name(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "toyworld"
    model = mtu.upcycle(mtu.load_base_unet(str(shipped_base())), mtu.MTUConfig(tasks=["t2i"], num_experts=4))
    model.save_pretrained(local)
    assert list(read_adapter_config("toyworld")["tasks"]) == ["t2i"]
    assert MTUPipeline.from_pretrained("toyworld").unet.task_names == ["t2i"]
    (tmp_path / "toyworld-base").mkdir()
    with pytest.raises(ValueError, match="`base` 'toyworld-base' is not a diffusers pipeline folder"):
        check_base_location("toyworld-base")


def test_short_names_of_the_wrong_kind_or_unknown_names(shipped, tmp_path):
    assert check_base_location("toyworld-base") == str(shipped_base())
    assert mtu.load_base_unet("toyworld-base").config["_name_or_path"] == "toyworld-base"
    with pytest.raises(ValueError, match="`base` 'toyworld' is the short name of an MTU adapter"):
        check_base_location("toyworld")
    with pytest.raises(ValueError, match="adapter 'toyworld-base' is the short name of a base pipeline"):
        read_adapter_config("toyworld-base")
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a hub id.*shipped bases: "
                                                "toyworld-base"):
        check_base_location("toyworld-bass")
    with pytest.raises(FileNotFoundError, match="no MTU adapter in 'toyworl'.*shipped adapters: toyworld"):
        MTUPipeline.from_pretrained("toyworl")


def test_a_missing_shipped_model_is_one_line(not_shipped, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"the shipped toy-world MTU model \('toyworld'\) is not in this"):
        MTUPipeline.from_pretrained("toyworld")
    out = tmp_path / "out.png"
    code = main(["generate", "--model", "toyworld", "--task", "t2i", "--prompt", "a red circle", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not out.exists()
    assert [line for line in err.splitlines() if line.startswith("mtu: error:")] == [
        line for line in err.splitlines() if line.strip()]
    assert "the shipped toy-world MTU model ('toyworld') is not in this installation" in err


def test_training_takes_the_shipped_base_by_its_short_name():
    from mtu.training.components import load_base, load_frozen_parts

    parts, unet = load_base("toyworld-base")
    assert parts.vae.config.scaling_factor == pytest.approx(
        load_frozen_parts(str(shipped_base())).vae.config.scaling_factor)
    assert unet.config._name_or_path == "toyworld-base"  # what an adapter trained from it records
    with pytest.raises(ValueError, match="`model.base` 'toyworld-bas' must be .*toyworld-base"):
        load_frozen_parts("toyworld-bas")
