"""`mtu upcycle / inspect / fold` on local folders, and one-line errors."""

import json
import subprocess
import sys

import pytest
import torch
from diffusers import UNet2DConditionModel

import mtu
from mtu.cli import main

from .conftest import tiny_inputs


@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory, tiny_base):
    folder = tmp_path_factory.mktemp("base") / "unet"
    tiny_base.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory, tiny_base):
    """A diffusers pipeline folder layout (model_index.json + unet/); only the UNet is read."""
    folder = tmp_path_factory.mktemp("pipe")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                         "unet": ["diffusers", "UNet2DConditionModel"]}))
    tiny_base.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_upcycle_inspect_fold(capsys, tmp_path, unet_folder):
    adapter = tmp_path / "adapter"
    code, out, _ = run(capsys, "upcycle", "--base", str(unet_folder), "--tasks", "t2i,edit", "--experts", "4",
                       "--granularity", "1/2", "--top-k", "2", "--out", str(adapter))
    assert code == 0 and "upcycled 7 blocks" in out
    code, out, _ = run(capsys, "inspect", str(adapter), "--json", "--latent-size", "8")
    report = json.loads(out)
    assert code == 0 and report["adapter"]["config"]["top_k"] == 2
    assert report["adapter"]["base"] == str(unet_folder.resolve())
    assert report["tasks"]["edit"]["folded_flops"] == report["tasks"]["edit"]["base_flops"]
    code, out, _ = run(capsys, "inspect", str(adapter), "--latent-size", "8")
    assert code == 0 and "folded/base" in out
    code, out, _ = run(capsys, "fold", str(adapter), "--task", "edit", "--out", str(tmp_path / "edit-unet"))
    assert code == 0
    folded = UNet2DConditionModel.from_pretrained(tmp_path / "edit-unet")
    model = mtu.load_mtu(adapter)
    inputs = tiny_inputs(channels=8)
    with torch.no_grad():
        torch.testing.assert_close(folded(**inputs).sample, model(**inputs, task="edit").sample)


def test_upcycle_from_a_pipeline_folder(capsys, tmp_path, pipeline_folder):
    code, _, _ = run(capsys, "upcycle", "--base", str(pipeline_folder), "--out", str(tmp_path / "a"))
    assert code == 0
    assert mtu.load_mtu(tmp_path / "a").base_info["name_or_path"] == str(pipeline_folder.resolve())


@pytest.mark.parametrize("argv, message", [
    (["upcycle", "--base", "random:tiny", "--tasks", "t2i,colorise", "--out", "X"], "unknown task 'colorise'"),
    (["upcycle", "--base", "random:tiny", "--experts", "4", "--top-k", "5", "--out", "X"],
     "top_k: must be None or an integer in [1, num_experts=4], got 5"),
    (["upcycle", "--base", "random:tiny", "--granularity", "abc", "--out", "X"], "invalid granularity 'abc'"),
    (["upcycle", "--base", "random:tiny", "--granularity", "-1", "--out", "X"],
     "granularity: must be a finite number > 0"),
    (["upcycle", "--base", "random:tiny", "--experts", "3", "--out", "X"], "d_ffn=128"),
    (["upcycle", "--base", "random:nope", "--out", "X"], "`base` 'random:nope' is not of the form"),
    (["upcycle", "--base", "/no/such/folder", "--out", "X"], "`base` '/no/such/folder' is neither"),
    (["upcycle", "--base", "random:tiny"], "the following arguments are required: --out"),
    (["inspect", "/no/such/adapter"], "no MTU adapter in '/no/such/adapter'"),
    (["train"], "--config: `mtu train` needs a run file: mtu train --config RUN.yaml"),  # was: "base: must be ..."
    (["train", "--max_steps", "3"], "--config: `mtu train` needs a run file"),
])
def test_errors_are_one_line(capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mtu: error:")]
    assert code == 2 and "Traceback" not in err
    assert len(errors) == 1 and message in errors[0], err


def test_base_folder_without_model(capsys, tmp_path):
    code, _, err = run(capsys, "upcycle", "--base", str(tmp_path), "--out", str(tmp_path / "a"))
    assert code == 2 and "holds neither a diffusers pipeline" in err


def test_fold_unknown_task(capsys, tmp_path):
    run(capsys, "upcycle", "--base", "random:tiny", "--tasks", "t2i", "--out", str(tmp_path / "a"))
    code, _, err = run(capsys, "fold", str(tmp_path / "a"), "--task", "sr", "--out", str(tmp_path / "b"))
    assert code == 2 and "unknown task 'sr'" in err and not (tmp_path / "b").exists()


def test_console_script_error_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mtu.cli", "upcycle", "--base", "random:tiny", "--experts", "0",
                             "--out", str(tmp_path / "a")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "num_experts: must be an integer >= 1, got 0" in result.stderr


def _offline_env(cache):
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent)}


def test_hub_id_loads_from_the_hub_cache(tmp_path, tiny_base):
    """The hub code path, exercised offline: a pipeline repo laid out as the hub cache stores it."""
    snapshot = tmp_path / "hub" / "models--testorg--tiny-sd" / "snapshots" / ("0" * 40)
    tiny_base.save_pretrained(snapshot / "unet", safe_serialization=True)
    (snapshot / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (tmp_path / "hub" / "models--testorg--tiny-sd" / "refs").mkdir()
    (tmp_path / "hub" / "models--testorg--tiny-sd" / "refs" / "main").write_text("0" * 40)
    result = subprocess.run([sys.executable, "-m", "mtu.cli", "upcycle", "--base", "testorg/tiny-sd", "--out",
                             str(tmp_path / "a")], capture_output=True, text=True, env=_offline_env(tmp_path / "hub"))
    assert result.returncode == 0, result.stderr
    assert mtu.load_mtu(tmp_path / "a", base=tiny_base.__class__.from_pretrained(snapshot / "unet")) is not None
    recorded = json.loads((tmp_path / "a" / "mtu_config.json").read_text())["base"]["name_or_path"]
    assert recorded == "testorg/tiny-sd@" + "0" * 40  # pinned to the commit it was made from


def test_unreachable_hub_id_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mtu.cli", "upcycle", "--base", "nobody/nothing", "--out",
                             str(tmp_path / "a")], capture_output=True, text=True, env=_offline_env(tmp_path / "hub"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "mtu: error: could not load base 'nobody/nothing' from the Hugging Face Hub" in result.stderr


def test_data_validate(capsys, tmp_path):
    from .training_parts import write_edit_folder

    folder = write_edit_folder(tmp_path)
    (folder / "3_out.png").write_bytes(b"broken")
    code, out, _ = run(capsys, "data", "validate", "--task", "edit", "--format", "folder", "--path", str(folder),
                       "--schema", "instructpix2pix", "--json")
    report = json.loads(out)[0]
    assert code == 1 and report["num_samples"] == 8 and report["num_failed"] == 1
    assert report["failures"][0]["key"].startswith("3_")
    code, out, _ = run(capsys, "data", "validate", "--task", "edit", "--format", "folder", "--path", str(folder),
                       "--schema", "instructpix2pix", "--limit", "3")
    assert code == 0 and "readable 3" in out


def test_data_validate_missing_column_is_one_line(capsys, tmp_path):
    from .training_parts import write_caption_folder

    code, _, err = run(capsys, "data", "validate", "--task", "edit", "--format", "folder", "--schema",
                       "instructpix2pix", "--path", str(write_caption_folder(tmp_path)))
    assert code == 2 and err.count("mtu: error:") == 1 and "missing" in err


def test_generate_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "--model", str(tmp_path), "--task", "edit", "--image",
                       str(tmp_path / "missing.png"), "--prompt", "make it blue", "--out", str(tmp_path / "o.png"))
    assert code == 2 and err.count("mtu: error:") == 1 and "no MTU adapter in" in err
