"""Where an adapter's base is recorded and found (issue 14, point 1): adapters record a local base as its absolute path,
so they load from any directory; a missing local path fails at once, naming it, instead of being tried on the hub;
relative paths in a run file are relative to the file. Every load here runs from another directory than the one the
adapter was made in, on a realistic pipeline folder (safety checker, feature extractor, spaces in its path)."""

import json
import time
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import UNet2DConditionModel

import mtu
from mtu import MTUConfig
from mtu.cli import main
from mtu.training import ModelConfig, load_train_config
from mtu.training.config import config_differences, resolve_config_paths
from mtu.training.methods import build_model, load_baseline, save_baseline
from mtu.upcycling.bases import base_location, check_base_spec, find_recorded_base
from mtu.upcycling.serialization import CONFIG_NAME

from .base_folder_parts import write_base_folders
from .conftest import nudge

TASKS = MTUConfig(tasks=["t2i", "edit"], num_experts=2)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's project folder: `models/sd base` (a pipeline with a safety checker) beside `runs/` and `elsewhere/`."""
    root = tmp_path_factory.mktemp("my project")
    write_base_folders(root / "models")
    (root / "runs").mkdir()
    (root / "elsewhere").mkdir()
    return root


def _recorded(adapter: Path) -> str:
    return json.loads((adapter / CONFIG_NAME).read_text())["base"]["name_or_path"]


def _assert_same_adapter(loaded, model) -> None:
    for (name, expected), (_, actual) in zip(model.mtu_named_parameters(), loaded.mtu_named_parameters()):
        assert torch.equal(actual, expected), name


def test_save_pretrained_after_a_relative_from_pretrained_loads_from_anywhere(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project)
    unet = UNet2DConditionModel.from_pretrained("models/sd base", subfolder="unet")
    assert unet.config._name_or_path == "models/sd base"  # what diffusers keeps: the relative string
    model = mtu.upcycle(unet, TASKS)
    nudge(model)
    model.save_pretrained(tmp_path / "adapter")
    assert _recorded(tmp_path / "adapter") == str((project / "models" / "sd base").resolve())
    monkeypatch.chdir(project / "elsewhere")
    _assert_same_adapter(mtu.load_mtu(tmp_path / "adapter"), model)


def test_upcycle_and_fold_from_other_directories(project, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert main(["upcycle", "--base", "models/sd base", "--tasks", "t2i,edit", "--experts", "2",
                 "--out", "runs/upcycled"]) == 0
    assert _recorded(project / "runs" / "upcycled") == str((project / "models" / "sd base").resolve())
    monkeypatch.chdir(project / "elsewhere")
    assert main(["fold", str(project / "runs" / "upcycled"), "--task", "t2i", "--out", str(tmp_path / "folded")]) == 0
    assert (tmp_path / "folded" / "diffusion_pytorch_model.safetensors").is_file()


def test_a_training_run_records_its_base_absolute(project, monkeypatch):
    """`model.base` as the run gives it (relative to the directory the run starts in) is recorded absolute, for MTU
    and for the baselines alike."""
    monkeypatch.chdir(project)
    unet = mtu.load_base_unet("models/sd base")
    model = build_model(unet, ModelConfig(base="models/sd base", mtu={"num_experts": 2}), ["t2i", "edit"])
    assert model.base_info["name_or_path"] == str((project / "models" / "sd base").resolve())
    baseline = build_model(mtu.load_base_unet("models/sd base"), ModelConfig(base="models/sd base", method="lora"),
                           ["t2i"])
    assert baseline.base_info["name_or_path"] == str((project / "models" / "sd base").resolve())
    save_baseline(baseline, project / "runs" / "lora")
    monkeypatch.chdir(project / "elsewhere")
    assert load_baseline(project / "runs" / "lora").task_names == ["t2i"]


def test_continuing_from_an_adapter_records_the_runs_base(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project)
    mtu.upcycle(mtu.load_base_unet("models/sd base"), TASKS).save_pretrained(tmp_path / "start")
    moved = tmp_path / "moved base"  # the same weights elsewhere: the run's base is where it now finds them
    (project / "models" / "sd base").rename(moved)
    try:
        model = build_model(mtu.load_base_unet(str(moved)),
                            ModelConfig(base=str(moved), adapter=str(tmp_path / "start")), ["t2i", "edit"])
        assert model.base_info["name_or_path"] == str(moved.resolve())
    finally:
        moved.rename(project / "models" / "sd base")


def test_a_missing_local_path_fails_at_once_naming_it(project, monkeypatch):
    """`models/sd15` looks like a hub id, but `models/` is a folder here: a local path that is missing. No hub."""
    monkeypatch.chdir(project)
    for spec in ["models/sd15-tiny", "./sd base", "../models/sd base", "models/sub/sd base", "~/no-such-base-14"]:
        started = time.monotonic()
        with pytest.raises(FileNotFoundError, match=f"`base` '{spec}' is neither .*does not exist"):
            mtu.load_base_unet(spec)
        assert time.monotonic() - started < 2
    assert check_base_spec("org/model") == ("hub", "org/model")  # nothing local by that name: the hub's


def test_what_an_adapter_records(project, monkeypatch):
    monkeypatch.chdir(project)
    assert base_location("models/sd base") == str((project / "models" / "sd base").resolve())
    assert base_location("org/model") == "org/model"
    assert base_location("toyworld-base") == "toyworld-base"
    assert base_location("random:tiny:3") == "random:tiny:3"
    shipped = mtu.upcycle(mtu.load_base_unet("toyworld-base"), MTUConfig(tasks=["t2i"]), fingerprint=False)
    assert shipped.base_info["name_or_path"] == "toyworld-base"  # a short name loads in any installation


def _old_adapter(project: Path, folder: Path, recorded: str) -> Path:
    """An adapter as mtu wrote it before issue 14: its base recorded as the relative path it was given."""
    mtu.upcycle(mtu.load_base_unet(str(project / "models" / "sd base")), TASKS).save_pretrained(folder)
    record = json.loads((folder / CONFIG_NAME).read_text())
    record["base"]["name_or_path"] = recorded
    (folder / CONFIG_NAME).write_text(json.dumps(record))
    return folder


def test_an_old_adapter_with_a_relative_base_finds_it_above_its_folder(project, monkeypatch):
    """Decision: a recorded relative path is tried relative to the current directory, then to each folder above
    the adapter's (a run's runs/x/final finds models/ beside runs/)."""
    adapter = _old_adapter(project, project / "runs" / "old" / "final", "models/sd base")
    monkeypatch.chdir(project / "elsewhere")
    assert find_recorded_base("models/sd base", adapter) == str(project / "models" / "sd base")
    assert mtu.load_mtu(adapter).base_info["name_or_path"] == str((project / "models" / "sd base").resolve())
    monkeypatch.chdir(project)
    assert find_recorded_base("models/sd base", adapter) == "models/sd base"  # the current directory first


def test_an_old_adapter_whose_base_is_nowhere_names_it_and_suggests_base(project, tmp_path, monkeypatch, capsys):
    adapter = _old_adapter(project, tmp_path / "adapter", "../models/gone base")
    monkeypatch.chdir(project / "elsewhere")
    with pytest.raises(FileNotFoundError, match=r"base '\.\./models/gone base' does not exist.*CLI: --base"):
        mtu.load_mtu(adapter)
    capsys.readouterr()
    assert main(["fold", str(adapter), "--task", "t2i", "--out", str(tmp_path / "folded")]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("mtu: error: ")]
    assert "Traceback" not in err and "'../models/gone base'" in line and "--base" in line, err
    assert main(["fold", str(adapter), "--task", "t2i", "--out", str(tmp_path / "folded"),
                 "--base", str(project / "models" / "sd base")]) == 0


def _write_run_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    run = {
        "output_dir": "runs/first",
        "cache_dir": "cache",
        "model": {"base": "../models/sd base", "adapter": "adapters/start"},
        "data": [{"task": "t2i", "format": "folder", "path": "data/t2i", "schema": "captions", "resolution": 32},
                 {"task": "t2i", "format": "webdataset", "path": "shards/{0..3}.tar", "schema": "captions",
                  "resolution": 32},
                 {"task": "t2i", "format": "hf", "path": "org/captions", "schema": "captions", "resolution": 32},
                 {"task": "edit", "format": "toyworld", "resolution": 32, "count": 8}],
    }
    (folder / "run.yaml").write_text(yaml.safe_dump(run))
    return folder / "run.yaml"


def test_relative_paths_in_a_run_file_are_relative_to_the_file(project, monkeypatch):
    run_file = _write_run_file(project / "configs dir")
    monkeypatch.chdir(project / "elsewhere")
    config = load_train_config(run_file)
    here = (project / "configs dir").resolve()
    assert config.output_dir == str(here / "runs" / "first")
    assert config.cache_dir == str(here / "cache")
    assert config.model.base == str((project / "models" / "sd base").resolve())
    assert config.model.adapter == str(here / "adapters" / "start")
    assert [source.path for source in config.data[:3]] == [str(here / "data" / "t2i"),
                                                          str(here / "shards" / "{0..3}.tar"), "org/captions"]
    # the command line's paths stay relative to the current directory
    overridden = load_train_config(run_file, ["--output_dir", "runs/mine", "--model.base", "toyworld-base"])
    assert (overridden.output_dir, overridden.model.base) == ("runs/mine", "toyworld-base")


def test_a_run_saved_with_relative_paths_still_resumes(project, monkeypatch):
    """A config.yaml saved before issue 14 holds the run file's paths as written (relative to the directory the run
    ran in); resumed from that directory with the same run file, nothing differs."""
    monkeypatch.chdir(project)
    run_file = _write_run_file(project)
    written_then = yaml.safe_load(run_file.read_text())
    now = json.loads(json.dumps(load_train_config(run_file).to_dict()))
    assert now["output_dir"] == str(project.resolve() / "runs" / "first")
    assert config_differences(written_then, now) == []
    assert config_differences({**written_then, "output_dir": "runs/second"}, now) == ["output_dir"]
    assert resolve_config_paths({"model": {"base": "random:tiny"}}, project) == {"model": {"base": "random:tiny"}}


def test_a_run_file_trains_from_any_directory_and_its_adapter_loads_from_another(project, monkeypatch):
    """The README's workflow with relative paths: the run file beside its data, started from elsewhere."""
    from .training_parts import write_caption_folder, write_edit_folder

    configs = project / "configs dir"
    write_caption_folder(configs / "data"), write_edit_folder(configs / "data")
    run = {"output_dir": "../runs/from yaml", "model": {"base": "../models/sd base", "mtu": {"num_experts": 2}},
           "data": [{"task": "t2i", "format": "folder", "path": "data/t2i", "schema": "captions", "resolution": 16},
                    {"task": "edit", "format": "folder", "path": "data/edit", "schema": "instructpix2pix",
                     "resolution": 16}],
           "max_steps": 1, "batch_size": 2, "checkpoint_every": 0, "log_with": "none"}
    (configs / "train.yaml").write_text(yaml.safe_dump(run))
    monkeypatch.chdir(project / "elsewhere")
    assert main(["train", "--config", str(configs / "train.yaml")]) == 0
    final = project / "runs" / "from yaml" / "final"
    assert _recorded(final) == str((project / "models" / "sd base").resolve())
    monkeypatch.chdir(final)
    assert mtu.load_mtu(final).task_names == ["t2i", "edit"]
