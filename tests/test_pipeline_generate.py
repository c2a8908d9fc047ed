"""Loading from folders: `MTUPipeline.from_base` on a saved tiny SD pipeline plus an MTU adapter, and
`generate` / the `mtu generate` options end to end (arguments checked before loading, PNG written atomically)."""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, EulerAncestralDiscreteScheduler, StableDiffusionPipeline
from transformers import CLIPTextModel

import mtu
from mtu.architectures import build_unet
from mtu.pipelines import MTUPipeline, add_generate_arguments, run_generate
from mtu.pipelines.generate import generate, save_png_atomic

from .conftest import nudge
from .diffusers_parts import tiny_components, tiny_scheduler, tiny_text_encoder, tiny_tokenizer, tiny_vae
from .test_pipeline_mtu import one_thread  # noqa: F401 (autouse fixture)

PROMPT = "make the circle blue"
TASKS = ["t2i", "edit", "sr", "inpaint_mask"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(base pipeline folder, adapter folder, the in-memory MTU model): the adapter is made from the saved base."""
    root = tmp_path_factory.mktemp("generate")
    base = StableDiffusionPipeline(**tiny_components(build_unet("tiny", seed=0), root))
    base.save_pretrained(root / "base", safe_serialization=True)
    model = mtu.upcycle(mtu.load_base_unet(str(root / "base")), mtu.MTUConfig(tasks=TASKS, num_experts=4)).eval()
    nudge(model)
    model.save_pretrained(root / "adapter")
    return root / "base", root / "adapter", model


@pytest.fixture(scope="module")
def input_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "in.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def read(path) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_from_base_loads_components_and_adapter(folders, tmp_path):
    base, adapter, model = folders
    pipe = MTUPipeline.from_base(base, adapter)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.text_encoder, CLIPTextModel)
    assert isinstance(pipe.scheduler, EulerAncestralDiscreteScheduler)
    assert isinstance(pipe.unet, mtu.MTUModel) and pipe.unet.task_names == TASKS
    in_memory = MTUPipeline(tiny_vae(), tiny_text_encoder(), tiny_tokenizer(tmp_path), model, tiny_scheduler())
    in_memory.set_progress_bar_config(disable=True)
    image = np.full((16, 16, 3), 0.3, np.float32)
    loaded = pipe("edit", PROMPT, image=image, num_inference_steps=2, generator=gen(0), output_type="np").images
    expected = in_memory("edit", PROMPT, image=image, num_inference_steps=2, generator=gen(0),
                         output_type="np").images
    np.testing.assert_allclose(loaded, expected, atol=1e-5, rtol=0)


def test_from_base_takes_a_model_and_a_scheduler(folders):
    base, _, model = folders
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    pipe = MTUPipeline.from_base(base, model, scheduler=scheduler, torch_dtype=torch.float32)
    assert pipe.unet is model and pipe.scheduler is scheduler
    pipe.set_progress_bar_config(disable=True)
    assert pipe("t2i", PROMPT, num_inference_steps=2, output_type="np").images.shape == (1, 16, 16, 3)


def test_from_base_casts_after_checking_the_base(folders):
    """The adapter's fingerprint is of the stored float32 base; a bfloat16 pipeline still loads."""
    base, adapter, _ = folders
    pipe = MTUPipeline.from_base(base, adapter, torch_dtype=torch.bfloat16)
    assert pipe.unet.task_embeddings.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.dtype == torch.bfloat16 and pipe.device.type == "cpu"
    pipe.to(torch.float32)
    assert next(pipe.unet.parameters()).dtype == pipe.vae.dtype == torch.float32


def test_from_base_reads_safetensors_only(folders, tmp_path):
    base, adapter, _ = folders
    pickled = StableDiffusionPipeline(**tiny_components(build_unet("tiny", seed=0), tmp_path))
    pickled.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(EnvironmentError, match="safetensors"):
        MTUPipeline.from_base(tmp_path / "pickled", mtu.upcycle(build_unet("tiny"), fingerprint=False))
    with pytest.raises(ValueError, match=r"`base` '.*adapter' is not a diffusers pipeline folder \(no model_index"):
        MTUPipeline.from_base(adapter, adapter)


def test_generate_writes_the_png_atomically(folders, input_png, tmp_path):
    base, adapter, _ = folders
    out = generate(adapter, "edit", PROMPT, image=input_png, out=tmp_path / "new" / "edit.png", steps=2, seed=3)
    assert out == tmp_path / "new" / "edit.png" and sorted(p.name for p in out.parent.iterdir()) == ["edit.png"]
    pipe = MTUPipeline.from_base(base, adapter)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("edit", PROMPT, image=PIL.Image.fromarray(read(input_png)), num_inference_steps=2,
                    generator=gen(3)).images[0]
    np.testing.assert_array_equal(read(out), np.asarray(expected))


def test_generate_other_tasks_and_a_base_override(folders, input_png, tmp_path):
    base, adapter, _ = folders
    low = tmp_path / "low.png"
    PIL.Image.fromarray(read(input_png)).resize((8, 8)).save(low)
    assert read(generate(adapter, "sr", image=low, out=tmp_path / "sr.png", steps=2)).shape == (16, 16, 3)
    mask = tmp_path / "mask.png"
    PIL.Image.fromarray(np.tile(np.array([0, 255], np.uint8).repeat(8), (16, 1))).save(mask)
    moved = shutil.copytree(base, tmp_path / "moved-base")
    out = generate(adapter, "inpaint_mask", PROMPT, image=input_png, mask=mask, out=tmp_path / "fill.png",
                   base=moved, steps=2, guidance_scale=3.0)
    assert read(out).shape == (16, 16, 3)


def test_generate_checks_arguments_before_loading(folders, input_png, tmp_path, monkeypatch):
    _, adapter, _ = folders

    def no_loading(*args, **kwargs):
        raise AssertionError("models were loaded before the arguments were checked")

    monkeypatch.setattr(MTUPipeline, "from_base", no_loading)
    cases = [
        (FileNotFoundError, "`image` file '.*nope.png' does not exist",
         dict(task="edit", prompt=PROMPT, image=tmp_path / "nope.png")),
        (FileNotFoundError, "`mask` file '.*nope.png' does not exist",
         dict(task="inpaint_mask", prompt=PROMPT, image=input_png, mask=tmp_path / "nope.png")),
        (ValueError, "`out` must be a .png file, got '.*out.jpg'",
         dict(task="t2i", prompt=PROMPT, out=tmp_path / "out.jpg")),
        (ValueError, r"`task` must be one of this model's tasks \['t2i', 'edit', 'sr', 'inpaint_mask'\], got 'inp",
         dict(task="inpaint", prompt=PROMPT, image=input_png)),
        (ValueError, "`image` is required by task 'edit'", dict(task="edit", prompt=PROMPT)),
        (ValueError, "`steps` must be an integer >= 1, got 0", dict(task="t2i", prompt=PROMPT, steps=0)),
        (ValueError, "`dtype`: must be one of", dict(task="t2i", prompt=PROMPT, dtype="float64")),
        (ValueError, "`height` must be a positive multiple of 8, got 12", dict(task="t2i", prompt=PROMPT, height=12)),
    ]
    for error, message, kwargs in cases:
        with pytest.raises(error, match=message):
            generate(adapter, **{"out": tmp_path / "out.png", **kwargs})
    with pytest.raises(FileNotFoundError, match="no MTU adapter in"):
        generate(tmp_path / "missing", "t2i", PROMPT, out=tmp_path / "out.png")
    with pytest.raises(FileNotFoundError, match="`base` '.*gone' is neither an existing folder nor a hub id"):
        generate(adapter, "t2i", PROMPT, out=tmp_path / "out.png", base=tmp_path / "gone")
    mtu.upcycle(build_unet("tiny"), mtu.MTUConfig(tasks=["t2i"])).save_pretrained(tmp_path / "random-base")
    with pytest.raises(ValueError, match="`base` 'random:tiny:0' is a bare UNet architecture"):
        generate(tmp_path / "random-base", "t2i", PROMPT, out=tmp_path / "out.png")
    assert list(tmp_path.glob("*.png")) == []


def test_generate_command_line_options(folders, tmp_path):
    _, adapter, _ = folders
    parser = add_generate_arguments(argparse.ArgumentParser(prog="mtu generate"))
    out = tmp_path / "t2i.png"
    args = parser.parse_args(["--model", str(adapter), "--task", "t2i", "--prompt", PROMPT, "--out", str(out),
                              "--steps", "2", "--guidance-scale", "5", "--seed", "1", "--height", "24",
                              "--width", "16", "--device", "cpu"])
    assert (args.model_dir, args.steps, args.guidance_scale, args.image_guidance_scale) == (str(adapter), 2, 5.0,
                                                                                            None)
    assert run_generate(args) == 0 and read(out).shape == (24, 16, 3)


def test_failed_write_keeps_the_old_file(tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"old")

    class Broken:
        def save(self, path, format, **params):
            with open(path, "wb") as handle:
                handle.write(b"partial")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_png_atomic(Broken(), out)
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
