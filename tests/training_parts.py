"""A tiny Stable Diffusion pipeline folder and tiny task datasets on disk, for trainer tests (no hub)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from diffusers import StableDiffusionPipeline
from PIL import Image

from mtu.architectures import build_unet

from .diffusers_parts import tiny_components

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def tiny_pipeline_folder(root: Path) -> Path:
    """A StableDiffusionPipeline folder (tiny UNet, VAE, CLIP, tokenizer, scheduler), safetensors only."""
    folder = Path(root) / "tiny-sd"
    if not (folder / "model_index.json").is_file():
        pipe = StableDiffusionPipeline(**tiny_components(build_unet("tiny", seed=0), Path(root)))
        pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _square(colour: str, background=(0, 0, 0), size: int = 16) -> Image.Image:
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[:] = background
    pixels[4:12, 4:12] = COLOURS[colour]
    return Image.fromarray(pixels)


def write_caption_folder(root: Path, count: int = 8) -> Path:
    """t2i data: "a red square" -> image, in the folder + metadata.jsonl format."""
    folder = Path(root) / "t2i"
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    with open(folder / "metadata.jsonl", "w") as handle:
        for i in range(count):
            colour = names[i % len(names)]
            _square(colour).save(folder / f"{i}.png")
            handle.write(json.dumps({"image": f"{i}.png", "text": f"a {colour} square"}) + "\n")
    return folder


def write_edit_folder(root: Path, count: int = 8) -> Path:
    """edit data: red square + "make it blue" -> blue square (InstructPix2Pix columns)."""
    folder = Path(root) / "edit"
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    with open(folder / "metadata.jsonl", "w") as handle:
        for i in range(count):
            source, target = names[i % len(names)], names[(i + 1) % len(names)]
            _square(source).save(folder / f"{i}_in.png")
            _square(target).save(folder / f"{i}_out.png")
            handle.write(json.dumps({"original_image": f"{i}_in.png", "edited_image": f"{i}_out.png",
                                     "edit_prompt": f"make it {target}"}) + "\n")
    return folder


def tiny_run_config(root: Path, **overrides) -> dict:
    """A TrainConfig dict for a 2-task run on the tiny pipeline."""
    root = Path(root)
    config = {
        "output_dir": str(root / "run"),
        "model": {"base": str(tiny_pipeline_folder(root)), "method": "mtu", "mtu": {"num_experts": 2}},
        "data": [
            {"task": "t2i", "format": "folder", "path": str(write_caption_folder(root)), "schema": "captions",
             "resolution": 16},
            {"task": "edit", "format": "folder", "path": str(write_edit_folder(root)), "schema": "instructpix2pix",
             "resolution": 16},
        ],
        "max_steps": 4,
        "batch_size": 2,
        "checkpoint_every": 2,
        "log_with": "none",
        "log_every": 1,
        "optim": {"lr": 1e-3},
    }
    for key, value in overrides.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) \
            else value
    return config


def _agreement(expected: dict, actual: dict, initial: dict) -> tuple:
    """(how far training moved `expected` from `initial`, how far `actual` is from `expected`: both L2 over every
    tensor of `expected`, and the largest absolute difference)."""
    update = sum((expected[k] - initial[k]).square().sum() for k in expected).sqrt()
    difference = sum((actual[k] - expected[k]).square().sum() for k in expected).sqrt()
    largest = max((actual[k] - expected[k]).abs().max() for k in expected)
    return update, difference, largest


def assert_same_training(expected_run: Path, actual_run: Path, base: str) -> float:
    """Two runs' final MTU weights agree: the difference is < 1% of how far training moved them, and < 1e-4.

    Adam divides by sqrt(v), so float noise in near-zero gradients shows up in the update; comparing against
    the size of the update keeps the check meaningful. Returns the relative difference.
    """
    import mtu
    from safetensors.torch import load_file

    expected = load_file(str(Path(expected_run) / "final" / "mtu_model.safetensors"))
    actual = load_file(str(Path(actual_run) / "final" / "mtu_model.safetensors"))
    assert expected.keys() == actual.keys(), (f"weights differ in names: only in {expected_run}: "
                                              f"{sorted(expected.keys() - actual.keys())[:3]}, only in {actual_run}: "
                                              f"{sorted(actual.keys() - expected.keys())[:3]}")
    config = mtu.load_mtu(Path(expected_run) / "final").mtu_config
    initial = dict(mtu.upcycle(mtu.load_base_unet(base), config).mtu_named_parameters())
    update, difference, largest = _agreement(expected, actual, {k: v.detach() for k, v in initial.items()})
    assert update > 1e-2, "training did not move the weights enough to compare"
    assert difference / update < 1e-2, f"relative difference {difference / update:.2e}"
    assert largest < 1e-4, f"largest difference {largest:.2e} (relative {difference / update:.2e})"
    return float(difference / update)


def assert_same_task_encoder(expected_run: Path, actual_run: Path, base: str, task: str = "edit") -> float:
    """Two runs' final text encoders of `task` (`model.task_text_encoders`) agree, as `assert_same_training` asks of
    the MTU weights: Adam's 1/sqrt(v) shows float noise in near-zero gradients, so the difference is measured against
    how far training moved the encoder (unsynchronized ranks would differ by about that). Returns it, relative."""
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    name = Path("final") / "text_encoders" / task / "model.safetensors"
    expected, actual = (load_file(str(Path(run) / name)) for run in (expected_run, actual_run))
    start = CLIPTextModel.from_pretrained(Path(base) / "text_encoder").state_dict()
    update, difference, largest = _agreement(expected, actual, start)
    assert update > 1e-3 and difference / update < 1e-2 and largest < 1e-4, (
        f"encoder moved {update:.2e}, the runs differ by {difference:.2e} (largest {largest:.2e})")
    return float(difference / update)


def tiny_sdxl_pipeline_folder(root: Path) -> Path:
    """A StableDiffusionXLPipeline folder (two text encoders, text_time conditioning), safetensors only."""
    from diffusers import StableDiffusionXLPipeline

    from .sdxl_parts import tiny_sdxl_components, tiny_sdxl_unet

    folder = Path(root) / "tiny-sdxl"
    if not (folder / "model_index.json").is_file():
        pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(tiny_sdxl_unet(), Path(root)))
        pipe.save_pretrained(folder, safe_serialization=True)
    return folder
