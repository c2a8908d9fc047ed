"""A folded MTU task is a stock diffusers UNet: it runs in diffusers' own pipelines and reloads without mtu."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.configuration_utils import FrozenDict
from PIL import Image
from safetensors.torch import load_file, save_file

import mtu
from mtu.architectures import build_unet

from .conftest import nudge, tiny_inputs
from .diffusers_parts import tiny_components, tiny_tokenizer

TASKS = ["t2i", "edit", "sr", "inpaint"]
PROMPT = "make the circle blue"


@pytest.fixture(scope="module")
def model():
    """The tiny UNet upcycled for four tasks, every MTU tensor nudged off its init so the tasks differ."""
    model = mtu.upcycle(build_unet("tiny", seed=0), mtu.MTUConfig(tasks=TASKS, num_experts=4)).eval()
    nudge(model)
    return model


def input_image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def run_pix2pix(unet, tmp_path, seed: int = 0) -> np.ndarray:
    pipe = StableDiffusionInstructPix2PixPipeline(**tiny_components(unet, tmp_path))
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, image=input_image(), num_inference_steps=2, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images


class TaskAdapter(torch.nn.Module):
    """Stands in for the UNet in a pipeline and forwards every call to `model(..., task=task)`; no folding."""

    def __init__(self, model: mtu.MTUModel, task: str):
        super().__init__()
        self.model, self.task = model, task
        self.config = FrozenDict({**model.unet.config, "in_channels": model.task_in_channels(task)})

    @property
    def dtype(self) -> torch.dtype:
        return self.model.task_embeddings.dtype

    @property
    def device(self) -> torch.device:
        return self.model.task_embeddings.device

    def forward(self, sample, timestep, encoder_hidden_states, **kwargs):
        return self.model(sample, timestep, encoder_hidden_states, task=self.task, **kwargs)


def test_tiny_tokenizer_encodes_any_text_without_unknown_tokens(tmp_path):
    """The offline tokenizer gives one real token per byte, so the pipelines see the prompt, not fallbacks."""
    tokenizer = tiny_tokenizer(tmp_path)
    for text in (PROMPT, "Héllo, wörld! 日本"):
        ids = tokenizer(text).input_ids
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.unk_token_id not in ids[1:-1] and len(ids) - 2 >= len(text.replace(" ", ""))
        assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")
    padded = tokenizer(PROMPT, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
    assert padded.input_ids.shape == (1, 77)


def test_folded_unets_run_in_stock_diffusers_pipelines(model, tmp_path):
    """Folded 'edit' runs in StableDiffusionInstructPix2PixPipeline and folded 't2i' in StableDiffusionPipeline."""
    edit = mtu.fold(model, "edit")
    assert type(edit) is UNet2DConditionModel and edit.config.in_channels == 8
    images = run_pix2pix(edit, tmp_path)
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()

    t2i = mtu.fold(model, "t2i")
    assert type(t2i) is UNet2DConditionModel and t2i.config.in_channels == 4
    pipe = StableDiffusionPipeline(**tiny_components(t2i, tmp_path))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(PROMPT, height=16, width=16, num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


def test_folded_edit_pipeline_matches_mtu_model(model, tmp_path):
    """InstructPix2Pix gives the same image with the folded 'edit' UNet as with the MTU model routed to 'edit'.

    The comparison can tell tasks apart: routing the same pipeline to 'inpaint' (also 8 channels) gives another
    image.
    """
    folded = run_pix2pix(mtu.fold(model, "edit"), tmp_path)
    routed = run_pix2pix(TaskAdapter(model, "edit"), tmp_path)
    np.testing.assert_allclose(folded, routed, rtol=0, atol=1e-4)
    other_task = run_pix2pix(TaskAdapter(model, "inpaint"), tmp_path)
    assert np.abs(other_task - routed).max() > 1e-3


SUBPROCESS_CODE = textwrap.dedent("""
    import json, sys
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    unet_dir, inputs_path, outputs_path, info_path = sys.argv[1:]
    unet = UNet2DConditionModel.from_pretrained(unet_dir).eval()
    inputs = load_file(inputs_path)
    with torch.no_grad():
        out = unet(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"]).sample
    save_file({"sample": out.contiguous()}, outputs_path)
    with open(info_path, "w") as f:
        json.dump({"in_channels": unet.config.in_channels,
                   "num_parameters": sum(p.numel() for p in unet.parameters())}, f)
    assert "mtu" not in sys.modules, sorted(m for m in sys.modules if m.split(".")[0] == "mtu")
""")


def test_saved_folded_unet_loads_and_matches_without_mtu(model, tiny_base, tmp_path):
    """`save_pretrained` of folded 'edit' reloads in a fresh process that never imports mtu, computes the MTU
    model's 'edit' output, and has the base UNet's parameter count plus conv_in's 4 extra input channels."""
    folded = mtu.fold(model, "edit")
    folded.save_pretrained(tmp_path / "unet", safe_serialization=True)

    inputs = tiny_inputs(batch=2, channels=model.task_in_channels("edit"))
    save_file(inputs, tmp_path / "inputs.safetensors")
    paths = [tmp_path / name for name in ("unet", "inputs.safetensors", "outputs.safetensors", "info.json")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", SUBPROCESS_CODE, *map(str, paths)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    with torch.no_grad():
        expected = model(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"], task="edit").sample
    loaded = load_file(tmp_path / "outputs.safetensors")["sample"]
    assert loaded.shape == expected.shape == (2, 4, 8, 8)
    assert (loaded - expected).abs().max().item() < 1e-4

    info = json.loads((tmp_path / "info.json").read_text())
    conv = tiny_base.conv_in
    assert conv.in_channels == 4 and conv.kernel_size == (3, 3)
    assert info["in_channels"] == 8
    assert info["num_parameters"] == sum(p.numel() for p in tiny_base.parameters()) + conv.out_channels * 4 * 3 * 3
