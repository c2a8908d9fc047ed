"""Issue 14's acceptance: the README's command-line workflow, step by step as written there, on realistic tiny
folders (a StableDiffusionPipeline with safety checker and feature extractor, under a path with spaces), run from
another working directory than the one the base and data live in, with no workaround between the steps."""

import json
from pathlib import Path

import yaml
from PIL import Image

from mtu.cli import main

from .base_folder_parts import sd_pipeline
from .training_parts import write_caption_folder, write_edit_folder


def run(*args: str) -> None:
    assert main(list(args)) == 0, args


def test_the_readme_workflow_from_another_directory(tmp_path, monkeypatch):
    models = tmp_path / "my models"
    sd_pipeline(models).save_pretrained(models / "sd15", safe_serialization=True)
    data = tmp_path / "my data"
    t2i, edit = write_caption_folder(data), write_edit_folder(data)
    Image.new("RGB", (16, 16), (220, 30, 30)).save(data / "in.png")
    work = tmp_path / "work dir"
    work.mkdir()
    monkeypatch.chdir(work)
    base = str(models / "sd15")

    # "Use it" (command line): upcycle, inspect, fold
    run("upcycle", "--base", base, "--tasks", "t2i,edit,sr,inpaint", "--experts", "4", "--out", "adapter/")
    run("inspect", "adapter/", "--json")
    run("fold", "adapter/", "--task", "edit", "--out", "edit-unet/")
    assert json.loads(Path("edit-unet/config.json").read_text())["in_channels"] == 8

    # "Train": a run file beside its data (relative paths there), validated, trained, resumed, used
    run_file = data / "run.yaml"
    run_file.write_text(yaml.safe_dump({
        "output_dir": str(work / "runs" / "sd15-mtu"),
        "model": {"base": base, "method": "mtu", "mtu": {"num_experts": 2}},
        "data": [{"task": "t2i", "format": "folder", "path": t2i.name, "schema": "captions", "resolution": 16},
                 {"task": "edit", "format": "folder", "path": edit.name, "schema": "instructpix2pix",
                  "resolution": 16}],
        "max_steps": 2, "batch_size": 2, "checkpoint_every": 1, "log_with": "none"}))
    run("data", "validate", "--config", str(run_file))
    run("train", "--config", str(run_file), "--optim.lr", "2e-4")
    run("train", "--config", str(run_file), "--optim.lr", "2e-4", "--resume", "auto")  # finished: a no-op
    run("generate", "--model", "runs/sd15-mtu/final", "--task", "edit", "--image", str(data / "in.png"),
        "--prompt", "make it blue", "--steps", "2", "--out", "out.png")
    run("generate", "--model", "runs/sd15-mtu/checkpoints/checkpoint-0000001", "--task", "t2i", "--prompt",
        "a red square", "--steps", "2", "--out", "early.png")
    assert Image.open("out.png").size == (16, 16) and Image.open("early.png").size == (16, 16)

    # "Export": the task as a stock diffusers pipeline, with the base's safety checker kept
    run("export", "runs/sd15-mtu/final", "--task", "edit", "--format", "diffusers", "--out", "edit-pipeline/")
    index = json.loads(Path("edit-pipeline/model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInstructPix2PixPipeline" and index["safety_checker"][0]
