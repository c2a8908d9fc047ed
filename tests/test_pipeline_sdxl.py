"""`MTUStableDiffusionXLPipeline` on tiny SDXL-shaped parts: t2i and edit run, SDXL conditioning (pooled text,
time ids, zeroed negatives) is diffusers', and folded tasks match diffusers' SDXL pipelines."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import StableDiffusionXLInstructPix2PixPipeline, StableDiffusionXLPipeline

import mtu
from mtu.pipelines import MTUPipeline, MTUStableDiffusionXLPipeline

from .conftest import nudge
from .diffusers_parts import tiny_scheduler, tiny_text_encoder, tiny_tokenizer, tiny_vae
from .sdxl_parts import tiny_sdxl_components, tiny_sdxl_unet
from .test_pipeline_mtu import one_thread, unet_calls  # noqa: F401 (one_thread: autouse fixture)

PROMPT = "make the circle blue"


@pytest.fixture(scope="module")
def model():
    model = mtu.upcycle(tiny_sdxl_unet(), mtu.MTUConfig(tasks=["t2i", "edit", "sr"], num_experts=4)).eval()
    nudge(model)
    return model


@pytest.fixture(scope="module")
def pipe(model, tmp_path_factory):
    pipe = MTUStableDiffusionXLPipeline(**tiny_sdxl_components(model, tmp_path_factory.mktemp("tok")))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def rgb(seed: int = 0, size: int = 16) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def run(pipe, task, **kwargs) -> np.ndarray:
    kwargs = {"num_inference_steps": 2, "generator": torch.Generator().manual_seed(0), "output_type": "np",
              **kwargs}
    return pipe(task, **kwargs).images


def test_sdxl_t2i_and_edit_run(pipe):
    for task, inputs in (("t2i", {}), ("edit", {"image": rgb()})):
        images = run(pipe, task, prompt=PROMPT, **inputs)
        assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()
    assert run(pipe, "sr", image=rgb(size=8)).shape == (1, 16, 16, 3)


def test_sdxl_conditioning(pipe, model):
    """Pooled text and time ids (original = target = 16x16, no crop) in every branch; with no negative prompt
    the negative branches get zero embeddings (force_zeros_for_empty_prompt), as diffusers' SDXL pipelines."""
    with unet_calls(model) as calls:
        run(pipe, "edit", prompt=PROMPT, image=rgb(), num_inference_steps=1)
    (sample, text, added), = calls
    assert sample.shape == (3, 8, 8, 8) and text.shape == (3, 77, 64)
    assert added["text_embeds"].shape == (3, 32)
    assert added["time_ids"].tolist() == [[16, 16, 0, 0, 16, 16]] * 3
    assert text[0].abs().max() > 0 and text[1:].abs().max() == 0 and added["text_embeds"][1:].abs().max() == 0
    with unet_calls(model) as calls:
        run(pipe, "t2i", prompt=PROMPT, negative_prompt="blurry", num_inference_steps=1, height=24, width=16)
    (_, text, added), = calls
    assert text[0].abs().max() > 0 and added["time_ids"][0].tolist() == [24, 16, 0, 0, 24, 16]


@pytest.mark.parametrize("task, pipeline_class", [("t2i", StableDiffusionXLPipeline),
                                                  ("edit", StableDiffusionXLInstructPix2PixPipeline)])
def test_folded_sdxl_pipeline_matches(pipe, task, pipeline_class):
    folded = pipe.fold(task)
    assert type(folded) is pipeline_class
    inputs = {"image": rgb()} if task == "edit" else {}
    kwargs = {**pipe.task_defaults(task).call_kwargs(), "num_inference_steps": 2}
    stock = folded(PROMPT, **inputs, **kwargs, height=16, width=16, generator=torch.Generator().manual_seed(0),
                   output_type="np").images
    np.testing.assert_allclose(stock, run(pipe, task, prompt=PROMPT, **inputs), atol=1e-4, rtol=0)


def test_sdxl_defaults_and_shared_checks(pipe):
    assert pipe.task_defaults("t2i").call_kwargs() == {"num_inference_steps": 50, "guidance_scale": 5.0}
    assert pipe.task_defaults("edit").call_kwargs() == {"num_inference_steps": 50, "guidance_scale": 10.0,
                                                       "image_guidance_scale": 1.5}
    with pytest.raises(ValueError, match="`image` is required by task 'edit'"):
        pipe("edit", PROMPT)


def test_each_pipeline_refuses_the_other_family(model, tmp_path):
    sd_parts = (tiny_vae(), tiny_text_encoder(), tiny_tokenizer(tmp_path))
    with pytest.raises(ValueError, match="MTUPipeline cannot run a UNet with `addition_embed_type` 'text_time'; "
                                         "use MTUStableDiffusionXLPipeline"):
        MTUPipeline(*sd_parts, model, tiny_scheduler())
    sd_model = mtu.upcycle(mtu.architectures.build_unet("tiny"), mtu.MTUConfig(tasks=["t2i"]), fingerprint=False)
    with pytest.raises(ValueError, match="MTUStableDiffusionXLPipeline cannot run a UNet with `addition_embed_type` "
                                         "None; use MTUPipeline"):
        MTUStableDiffusionXLPipeline(**tiny_sdxl_components(sd_model, tmp_path))

