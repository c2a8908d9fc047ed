"""`mtu export`: the diffusers format is a stock pipeline that samples the task; bad input is one line and leaves
nothing written; a failed write leaves the earlier output as it was."""

from __future__ import annotations

import errno
import json
import sys

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionInstructPix2PixPipeline, StableDiffusionXLPipeline
from PIL import Image
from safetensors.torch import load_file

import mtu
from mtu.architectures import build_unet
from mtu.cli import main
from mtu.outputs import MARKER_NAME
from mtu.pipelines import MTUPipeline

from .sdxl_parts import tiny_sdxl_unet
from .training_parts import tiny_pipeline_folder, tiny_sdxl_pipeline_folder


def run_cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()  # what ran before
    code = main(["export", *map(str, args)])
    return code, capsys.readouterr().err


def leftovers(folder) -> list[str]:
    """Staging folders or files an export left beside its output."""
    return sorted(entry.name for entry in folder.iterdir() if entry.name.startswith("."))


def test_diffusers_format_is_the_task_stock_pipeline(tmp_path, monkeypatch, capsys):
    """`--format diffusers` writes InstructPix2Pix for edit: it loads with DiffusionPipeline and, called with the
    recorded arguments, gives MTUPipeline's image; run from another directory, into a path with a space."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "exports" / "toy edit"
    code, err = run_cli(capsys, "toyworld", "--task", "edit", "--format", "diffusers", "--out", "exports/toy edit")
    assert code == 0, err
    record = json.loads((out / "mtu_task.json").read_text())
    assert record["pipeline"] == "StableDiffusionInstructPix2PixPipeline" and record["task"] == "edit"
    assert not list(out.rglob("*.bin")) and list(out.rglob("*.safetensors"))
    stock = DiffusionPipeline.from_pretrained(out)
    assert type(stock) is StableDiffusionInstructPix2PixPipeline and stock.unet.config.in_channels == 8
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8))
    kwargs = {**record["call_kwargs"], "num_inference_steps": 3, "output_type": "np"}
    stock.set_progress_bar_config(disable=True)
    actual = stock("make it blue", image=image, generator=torch.Generator().manual_seed(0), **kwargs).images
    pipe = MTUPipeline.from_pretrained("toyworld")
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("edit", "make it blue", image=image, generator=torch.Generator().manual_seed(0), **kwargs).images
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)
    # A second export of ours to the same folder needs no --overwrite
    code, err = run_cli(capsys, "toyworld", "--task", "sr", "--format", "diffusers", "--dtype", "fp16",
                        "--out", "exports/toy edit")
    assert code == 0, err
    assert json.loads((out / "mtu_task.json").read_text())["dtype"] == "fp16"
    weights = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert {value.dtype for value in weights.values()} == {torch.float16} and weights["conv_in.weight"].shape[1] == 8
    assert leftovers(out.parent) == []


def test_sdxl_task_exports_as_a_stock_sdxl_pipeline(tmp_path, capsys):
    base = tiny_sdxl_pipeline_folder(tmp_path)
    model = mtu.upcycle(tiny_sdxl_unet(), mtu.MTUConfig(tasks=["t2i", "edit"]), base_name_or_path=str(base))
    model.save_pretrained(tmp_path / "adapter")
    code, err = run_cli(capsys, tmp_path / "adapter", "--task", "t2i", "--format", "diffusers", "--out",
                        tmp_path / "out")
    assert code == 0, err
    assert type(DiffusionPipeline.from_pretrained(tmp_path / "out")) is StableDiffusionXLPipeline
    code, err = run_cli(capsys, tmp_path / "adapter", "--task", "t2i", "--format", "onnx", "--out", tmp_path / "x")
    assert code == 2 and err.strip() == ("mtu: error: --format: the onnx format takes SD 1.x/2.x tasks only (SDXL's "
                                         "two text encoders and added conditions have no ONNX sampling loop here); "
                                         "use --format diffusers.")
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def wide_adapter(tmp_path_factory):
    """An adapter whose 2 active experts x G=1 are twice the base FFN: no task folds into a stock UNet."""
    root = tmp_path_factory.mktemp("wide")
    base = tiny_pipeline_folder(root)
    model = mtu.upcycle(build_unet("tiny", seed=0), mtu.MTUConfig(tasks=["t2i"], num_experts=2, granularity=1.0),
                        base_name_or_path=str(base))
    model.save_pretrained(root / "adapter")
    return root / "adapter"


BAD_INPUTS = {
    "unknown task": (["toyworld", "--task", "sketch2img", "--format", "onnx"],
                     "--task: unknown task 'sketch2img'; the model has tasks ['t2i', 'edit', 'sr', 'inpaint']."),
    "unsupported format": (["toyworld", "--task", "t2i", "--format", "tflite"],
                           "--format: `format` must be one of ('diffusers', 'onnx'), got 'tflite'."),
    "unsupported dtype": (["toyworld", "--task", "t2i", "--format", "onnx", "--dtype", "bf16"],
                          "--dtype: `dtype` must be one of ('fp32', 'fp16'), got 'bf16'."),
    "task that cannot fold": (["WIDE", "--task", "t2i", "--format", "diffusers"],
                              "--format: the diffusers format holds a task folded into a stock UNet, and this "
                              "model's 2 active experts x G=1 are wider than the base FFN (top_k x G must be <= 1)."),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_writes_nothing(case, wide_adapter, tmp_path, capsys):
    args, message = BAD_INPUTS[case]
    args = [str(wide_adapter) if arg == "WIDE" else arg for arg in args]
    code, err = run_cli(capsys, *args, "--out", tmp_path / "out")
    assert code == 2 and err.strip() == f"mtu: error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_unwritable_or_foreign_output_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    (tmp_path / "a file").write_text("mine")
    code, err = run_cli(capsys, "toyworld", "--task", "t2i", "--format", "diffusers", "--out", tmp_path / "a file")
    assert code == 2 and "--out: " in err and "is an existing file" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    code, err = run_cli(capsys, "toyworld", "--task", "t2i", "--format", "diffusers", "--out", tmp_path / "full")
    assert code == 2 and "already holds files that are not an earlier `mtu export` output" in err
    monkeypatch.setattr("mtu.outputs.os.access", lambda path, mode: False)  # a read-only folder, simulated
    code, err = run_cli(capsys, "toyworld", "--task", "t2i", "--format", "diffusers", "--out", tmp_path / "new")
    assert code == 2 and "cannot be written: no write permission in" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a file", "full"]
    assert (tmp_path / "a file").read_text() == "mine" and (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_missing_onnx_extra_is_one_line_with_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails as if not installed
    code, err = run_cli(capsys, "toyworld", "--task", "t2i", "--format", "onnx", "--out", tmp_path / "out")
    assert code == 2 and err.strip() == ('mtu: error: ONNX export needs onnx and onnxruntime (onnxruntime is not '
                                         'installed): pip install "mtu-diffusion[export]"')
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_the_earlier_output_and_no_staging(tmp_path, monkeypatch, capsys):
    """A disk that fills up mid-export: one line, the earlier export untouched, no staging folder left."""
    out = tmp_path / "out"
    assert run_cli(capsys, "toyworld", "--task", "t2i", "--format", "diffusers", "--out", out)[0] == 0
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}

    def fill_disk(pipe, task, folder, dtype):
        (folder / "unet").mkdir()
        (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "unet"))

    monkeypatch.setattr("mtu.export.diffusers_export.write_diffusers_pipeline", fill_disk)
    code, err = run_cli(capsys, "toyworld", "--task", "edit", "--format", "diffusers", "--out", out)
    assert code == 2 and err.strip().splitlines()[-1].startswith("mtu: error: No space left on device")
    assert {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    assert leftovers(tmp_path) == [] and (out / MARKER_NAME).is_file()


def test_a_training_checkpoint_exports_and_a_baseline_is_refused(tmp_path, monkeypatch, capsys):
    """An MTU run's checkpoint exports (its folded UNet is the checkpoint model's); a LoRA run is refused in one line
    before anything is written."""
    from mtu.training import config_from_dict, train
    from mtu.training.export import model_from_checkpoint

    from .training_parts import tiny_run_config

    runs = {}
    for method in ("mtu", "lora"):
        runs[method] = tmp_path / f"run-{method}"
        train(config_from_dict(tiny_run_config(tmp_path, model={"method": method}, max_steps=1, checkpoint_every=1,
                                               output_dir=str(runs[method]))))
    checkpoint = sorted((runs["mtu"] / "checkpoints").glob("checkpoint-*"))[-1]
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, checkpoint, "--task", "t2i", "--format", "diffusers", "--out", "ckpt-t2i")
    assert code == 0, err
    expected = model_from_checkpoint(checkpoint).fold("t2i").state_dict()
    actual = load_file(tmp_path / "ckpt-t2i" / "unet" / "diffusion_pytorch_model.safetensors")
    assert actual.keys() == expected.keys() and all(torch.equal(actual[k], expected[k]) for k in expected)
    code, err = run_cli(capsys, runs["lora"], "--task", "t2i", "--format", "diffusers", "--out", "lora-t2i")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "is a trained baseline (full fine-tuning, LoRA or IA3), whose tasks do not fold into a stock UNet" in err
    assert not (tmp_path / "lora-t2i").exists()
