"""`MTUPipeline`: every task in one SD pipeline, the paper's defaults, diffusers-exact guidance, batch/seed
invariance, input formats, and every `check_inputs` error (fired before any model runs)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from diffusers import (
    StableDiffusionInpaintPipeline,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)

import mtu
from mtu.architectures import build_unet
from mtu.pipelines import TASK_DEFAULTS, MTUPipeline, TaskDefaults, common, guidance_kind, task_defaults
from mtu.upcycling import tasks as registry

from .conftest import nudge
from .diffusers_parts import tiny_scheduler, tiny_text_encoder, tiny_tokenizer, tiny_vae

USER_TASKS = (  # user-registered tasks, one per fallback kind
    mtu.TaskSpec("pipetest_recolor", image_inputs=("image",)),  # image-conditioned -> edit-like
    mtu.TaskSpec("pipetest_style", uses_prompt=True),  # text-only -> t2i-like
    mtu.TaskSpec("pipetest_denoise", uses_prompt=False, image_inputs=("image",)),  # no prompt -> no guidance
)
TASKS = ["t2i", "edit", "sr", "inpaint", "inpaint_mask"] + [spec.name for spec in USER_TASKS]
PROMPT = "make the circle blue"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a busy 2-core machine extra threads only spin (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    """The tiny UNet upcycled for every built-in task and three user tasks, MTU weights nudged off their init."""
    for spec in USER_TASKS:
        mtu.register_task(spec)
    model = mtu.upcycle(build_unet("tiny", seed=0), mtu.MTUConfig(tasks=TASKS, num_experts=4)).eval()
    nudge(model)
    yield model
    for spec in USER_TASKS:
        del registry._REGISTRY[spec.name]


@pytest.fixture(scope="module")
def pipe(model, tmp_path_factory):
    pipe = MTUPipeline(tiny_vae(), tiny_text_encoder(), tiny_tokenizer(tmp_path_factory.mktemp("tok")), model,
                       tiny_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def rgb(seed: int = 0, size: int = 16) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def mask(size: int = 16) -> PIL.Image.Image:
    """White (fill) in the right half."""
    pixels = np.zeros((size, size), dtype=np.uint8)
    pixels[:, size // 2:] = 255
    return PIL.Image.fromarray(pixels, mode="L")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs_for(task: str) -> dict:
    spec = mtu.get_task(task)
    kwargs = {"prompt": PROMPT if spec.uses_prompt else None}
    if spec.image_inputs:
        kwargs["image"] = rgb(size=8 if task == "sr" else 16)
    if "mask" in spec.image_inputs:
        kwargs["mask_image"] = mask()
    return kwargs


def run(pipe, task, steps=2, seed=0, **kwargs) -> np.ndarray:
    kwargs = {"num_inference_steps": steps, "generator": gen(seed), "output_type": "np", **inputs_for(task), **kwargs}
    return pipe(task, **kwargs).images


@contextmanager
def unet_calls(model):
    """Records (sample, encoder_hidden_states, added_cond_kwargs) of every call of the inner UNet."""
    calls = []

    def record(module, args, kwargs):
        calls.append((args[0].clone(), args[2].clone(), kwargs.get("added_cond_kwargs")))

    handle = model.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


# ---- defaults (Appendix A.2) ----

def test_defaults_table_holds_the_papers_values():
    sd, sdxl = TASK_DEFAULTS["sd"], TASK_DEFAULTS["sdxl"]
    assert sd["t2i"] == TaskDefaults("text", 20, 7.5)
    assert sd["edit"] == TaskDefaults("dual", 20, 7.5, 1.6)
    assert sd["inpaint"] == TaskDefaults("dual", 20, 4.0, 1.5)
    assert sd["sr"] == TaskDefaults("none", 20, 1.0, None, sr_scale=2)
    assert sd["inpaint_mask"] == TaskDefaults("text", 20, 7.5)
    assert sdxl["t2i"] == TaskDefaults("text", 50, 5.0)
    assert sdxl["edit"] == TaskDefaults("dual", 50, 10.0, 1.5)
    assert sdxl["inpaint"] == TaskDefaults("dual", 50, 4.0, 1.5)
    assert sdxl["sr"].guidance == "none" and sdxl["sr"].num_inference_steps == 50
    assert sd["edit"].call_kwargs() == {"num_inference_steps": 20, "guidance_scale": 7.5, "image_guidance_scale": 1.6}


def test_user_tasks_fall_back_by_their_spec():
    recolor, style, denoise = USER_TASKS
    assert [guidance_kind(spec) for spec in USER_TASKS] == ["dual", "text", "none"]
    assert task_defaults("sd", recolor) == TaskDefaults("dual", 20, 7.5, 1.6)  # edit-like
    assert task_defaults("sdxl", style) == TaskDefaults("text", 50, 5.0)  # t2i-like
    assert task_defaults("sd", denoise) == TaskDefaults("none", 20)  # sr-like, but no upscaling
    with_mask = mtu.TaskSpec("pipetest_fill", image_inputs=("mask", "masked_image"))
    assert task_defaults("sd", with_mask) == TaskDefaults("text", 20, 7.5)


# (UNet batch = guidance branches, UNet input channels) per task with its defaults; every output is 16x16 (sr
# from an 8x8 input)
EXPECTED_CALLS = {"t2i": (2, 4), "edit": (3, 8), "sr": (1, 8), "inpaint": (3, 8), "inpaint_mask": (2, 9),
                  "pipetest_recolor": (3, 8), "pipetest_style": (2, 4), "pipetest_denoise": (1, 8)}


@pytest.mark.parametrize("task", list(EXPECTED_CALLS))
def test_each_task_runs_with_its_guidance_branches(pipe, model, task):
    branches, channels = EXPECTED_CALLS[task]
    with unet_calls(model) as calls:
        images = run(pipe, task)
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()
    assert len(calls) == 2 and all(sample.shape == (branches, channels, 8, 8) for sample, _, _ in calls)


class StopRun(Exception):
    pass


# (steps, guidance, (guidance_scale, image_guidance_scale)) of SD1.5, Appendix A.2; user tasks by their kind
PAPER_DEFAULTS = {"t2i": (20, "text", (7.5, None)), "edit": (20, "dual", (7.5, 1.6)),
                  "inpaint": (20, "dual", (4.0, 1.5)), "sr": (20, "none", (1.0, None)),
                  "inpaint_mask": (20, "text", (7.5, None)), "pipetest_recolor": (20, "dual", (7.5, 1.6)),
                  "pipetest_style": (20, "text", (7.5, None)), "pipetest_denoise": (20, "none", (1.0, None))}


@pytest.mark.parametrize("task", list(PAPER_DEFAULTS))
def test_unset_arguments_take_the_tasks_defaults(pipe, monkeypatch, task):
    """Steps and guidance scales reaching the sampling loop are the paper's (the run stops at the first step)."""
    seen = []

    def spy(noise_pred, guidance, guidance_scale, image_guidance_scale):
        seen.append((len(pipe.scheduler.timesteps), guidance, (guidance_scale, image_guidance_scale)))
        raise StopRun

    monkeypatch.setattr(common, "combine_guidance", spy)
    with pytest.raises(StopRun):
        pipe(task, **inputs_for(task))
    assert seen == [PAPER_DEFAULTS[task]]


def test_guidance_off_runs_one_branch(pipe, model):
    with unet_calls(model) as calls:
        run(pipe, "t2i", guidance_scale=1.0)
        run(pipe, "edit", guidance_scale=7.5, image_guidance_scale=0.5)  # diffusers: dual needs image scale >= 1
    assert [sample.shape[0] for sample, _, _ in calls] == [1, 1, 1, 1]


def test_dual_guidance_branches_follow_instruct_pix2pix(pipe, model):
    """Branches [text + image, image only, unconditional]: the last has zero image channels, the last two the
    empty prompt."""
    with unet_calls(model) as calls:
        run(pipe, "edit", steps=1)
    (sample, text, _), = calls
    assert torch.equal(sample[0, 4:], sample[1, 4:]) and sample[0, 4:].abs().max() > 0
    assert torch.equal(sample[2, 4:], torch.zeros_like(sample[2, 4:]))
    assert torch.equal(text[1], text[2]) and not torch.equal(text[0], text[1])


def test_sr_conditions_on_the_bicubic_upsampled_low_resolution_image(pipe, model):
    low = rgb(3, size=8)
    with unet_calls(model) as calls:
        images = pipe("sr", image=low, num_inference_steps=1, generator=gen(0), output_type="np").images
    assert images.shape == (1, 16, 16, 3)
    pixels = torch.from_numpy(np.asarray(low, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    upsampled = F.interpolate(pixels, size=(16, 16), mode="bicubic", align_corners=False).clamp(-1, 1)
    expected = pipe.vae.encode(upsampled).latent_dist.mode()
    torch.testing.assert_close(calls[0][0][:, 4:], expected, atol=1e-5, rtol=0)
    assert run(pipe, "sr", height=32, width=24).shape == (1, 32, 24, 3)


# ---- the folded fast path: diffusers' own pipelines give the same images ----

@pytest.mark.parametrize("task, pipeline_class", [("t2i", StableDiffusionPipeline),
                                                  ("edit", StableDiffusionInstructPix2PixPipeline)])
def test_folded_pipeline_matches_mtu_pipeline(pipe, task, pipeline_class):
    """Same seed and scheduler: the stock pipeline with the folded UNet gives MTUPipeline's image, so guidance
    and conditioning match diffusers exactly. The same stock pipeline with another task's UNet does not."""
    folded = pipe.fold(task)
    assert type(folded) is pipeline_class and type(folded.unet) is UNet2DConditionModel
    assert folded.vae is pipe.vae and folded.text_encoder is pipe.text_encoder
    kwargs = {**pipe.task_defaults(task).call_kwargs(), "num_inference_steps": 2}
    inputs = inputs_for(task)
    stock = folded(inputs.pop("prompt"), **inputs, **kwargs, height=16, width=16, generator=gen(0),
                   output_type="np").images
    np.testing.assert_allclose(stock, run(pipe, task), atol=1e-4, rtol=0)
    other = pipeline_class(**{**folded.components, "unet": pipe.unet.fold("inpaint" if task == "edit" else
                                                                               "pipetest_style")})
    other.set_progress_bar_config(disable=True)
    other_images = other(PROMPT, **inputs, **kwargs, height=16, width=16, generator=gen(0), output_type="np").images
    assert np.abs(other_images - stock).max() > 1e-3


def test_fold_picks_the_diffusers_pipeline_of_the_task(pipe):
    assert type(pipe.fold("inpaint")) is StableDiffusionInstructPix2PixPipeline
    assert type(pipe.fold("sr")) is StableDiffusionInstructPix2PixPipeline
    folded = pipe.fold("inpaint_mask")
    assert type(folded) is StableDiffusionInpaintPipeline and folded.unet.config.in_channels == 9
    assert folded.scheduler is not pipe.scheduler and folded.scheduler.config.beta_end == pipe.scheduler.config.beta_end


# ---- batches and seeds ----

@pytest.mark.parametrize("task", ["t2i", "edit"])
def test_a_seed_gives_the_same_image_alone_or_in_a_batch(pipe, task):
    batch_inputs = {"prompt": [PROMPT, "a red square"]}
    if task == "edit":
        batch_inputs["image"] = [rgb(0), rgb(1)]
    batch = pipe(task, num_inference_steps=2, generator=[gen(0), gen(1)], output_type="np", **batch_inputs).images
    assert batch.shape == (2, 16, 16, 3)
    for i in range(2):
        single = {key: value[i] for key, value in batch_inputs.items()}
        alone = pipe(task, num_inference_steps=2, generator=gen(i), output_type="np", **single).images
        np.testing.assert_allclose(batch[i:i + 1], alone, atol=1e-5, rtol=0)
    assert np.abs(batch[0] - batch[1]).max() > 1e-3


def test_num_images_per_prompt_keeps_each_prompts_images_together(pipe):
    generators = [gen(0), gen(1), gen(2), gen(3)]
    images = pipe("edit", [PROMPT, "a red square"], image=rgb(0), num_images_per_prompt=2, num_inference_steps=2,
                  generator=generators, output_type="np").images
    assert images.shape == (4, 16, 16, 3)
    alone = pipe("edit", "a red square", image=rgb(0), num_inference_steps=2, generator=gen(3),
                 output_type="np").images
    np.testing.assert_allclose(images[3:], alone, atol=1e-5, rtol=0)


def test_a_single_generator_is_reproducible(pipe):
    first = pipe("t2i", [PROMPT] * 2, num_inference_steps=2, generator=gen(5), output_type="np").images
    second = pipe("t2i", [PROMPT] * 2, num_inference_steps=2, generator=gen(5), output_type="np").images
    np.testing.assert_array_equal(first, second)
    assert np.abs(first[0] - first[1]).max() > 1e-3  # the batch is drawn in order, not repeated


# ---- inputs and outputs ----

def test_pil_numpy_and_torch_inputs_agree(pipe):
    image, fill = rgb(2), mask()
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)[None] * 2 - 1
    fill_array = np.asarray(fill, dtype=np.float32) / 255.0
    reference = run(pipe, "inpaint_mask", image=image, mask_image=fill)
    for image_input, mask_input in [(array, fill_array), (tensor, torch.from_numpy(fill_array)[None, None]),
                                    ([image], fill_array[..., None]), (array[None], fill.convert("1"))]:
        np.testing.assert_allclose(run(pipe, "inpaint_mask", image=image_input, mask_image=mask_input), reference,
                                   atol=1e-5, rtol=0)


def test_output_types(pipe):
    assert run(pipe, "t2i", output_type="pt").shape == (1, 3, 16, 16)
    assert run(pipe, "t2i", output_type="latent").shape == (1, 4, 8, 8)
    images = pipe("t2i", PROMPT, num_inference_steps=2, generator=gen(0)).images
    assert len(images) == 1 and isinstance(images[0], PIL.Image.Image) and images[0].size == (16, 16)
    result = pipe("t2i", PROMPT, num_inference_steps=2, generator=gen(0), output_type="np", return_dict=False)
    assert isinstance(result, tuple) and result[0].shape == (1, 16, 16, 3)


def test_given_latents_replace_the_initial_draw(pipe):
    generator = gen(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator)  # what the pipeline would draw first
    given = pipe("t2i", PROMPT, num_inference_steps=2, generator=generator, latents=latents, output_type="np").images
    np.testing.assert_allclose(given, run(pipe, "t2i"), atol=1e-6, rtol=0)


def test_pipeline_needs_an_mtu_model_of_its_family(tmp_path):
    parts = (tiny_vae(), tiny_text_encoder(), tiny_tokenizer(tmp_path))
    with pytest.raises(TypeError, match="`unet` must be an MTUModel.*got UNet2DConditionModel"):
        MTUPipeline(*parts, build_unet("tiny"), tiny_scheduler())


# ---- check_inputs: every error, raised before any model runs ----

def bad_mask(shape, kind="np"):
    return np.zeros(shape, dtype=np.float32) if kind == "np" else torch.zeros(shape)


ERRORS = [
    ("paint", {}, r"`task` must be one of this model's tasks \['t2i', 'edit', .*got 'paint'"),
    (["t2i"], {}, r"`task` must be one of this model's tasks .*got \['t2i'\]"),
    ("edit", {"image": None}, r"`image` is required by task 'edit'"),
    ("t2i", {"image": rgb()}, r"`image` must be None: task 't2i' takes no image"),
    ("inpaint_mask", {"mask_image": None}, r"`mask_image` is required by task 'inpaint_mask'"),
    ("edit", {"mask_image": mask()}, r"`mask_image` must be None: task 'edit' takes no mask"),
    ("inpaint_mask", {"mask_image": mask(24)}, r"`mask_image` must have the size of `image` \(16x16\), got 24x24"),
    # Sizes that are not multiples of 8 are rounded down as diffusers does (issue 14): a 12x12 mask for a 16x16
    # image is then a mask of another size; a 12x12 image, any PIL mode of image or mask, are accepted
    # (tests/test_pipeline_input_kinds.py).
    ("inpaint_mask", {"mask_image": mask(12)}, r"`mask_image` must have the size of `image` \(16x16\), got 12x12"),
    ("t2i", {"height": 20}, r"`height` must be a positive multiple of 8, got 20"),
    ("t2i", {"width": 0}, r"`width` must be a positive multiple of 8, got 0"),
    ("edit", {"width": 24}, r"`width` must be None or the size of `image` \(16\) for task 'edit', got 24"),
    ("inpaint_mask", {"mask_image": bad_mask((16, 16, 3))}, r"`mask_image` must have 1 channel, found 3"),
    ("inpaint_mask", {"mask_image": bad_mask((1, 3, 16, 16), "pt")}, r"`mask_image` must have 1 channel, found 3"),
    ("inpaint_mask", {"mask_image": [mask(), mask(), mask()]},
     r"`mask_image` must hold 1 mask or one per image \(1\), got 3"),
    ("edit", {"image": np.zeros((16, 16, 4), np.float32)}, r"`image` must have 3 channels, found 4"),
    ("edit", {"image": np.full((16, 16, 3), 255.0)}, r"`image` values must lie in \[0, 1\] for a ndarray"),
    ("edit", {"image": torch.full((1, 3, 16, 16), 2.0)}, r"`image` values must lie in \[-1, 1\] for a Tensor"),
    ("edit", {"image": [rgb(), rgb(size=24)]}, r"`image` images must all have the same size"),
    ("edit", {"image": [rgb(), np.zeros((16, 16, 3))]}, r"`image` list items must all be of one kind, got \['Image', "
                                                       r"'ndarray'\]"),
    ("edit", {"image": "in.png"}, r"`image` must be a PIL image, a numpy array, a torch tensor.*got str 'in.png'"),
    ("t2i", {"num_inference_steps": 0}, r"`num_inference_steps` must be an integer >= 1, got 0"),
    ("t2i", {"num_inference_steps": 2.5}, r"`num_inference_steps` must be an integer >= 1, got 2.5"),
    ("t2i", {"guidance_scale": -1.0}, r"`guidance_scale` must be a number >= 0, got -1.0"),
    ("t2i", {"guidance_scale": "7"}, r"`guidance_scale` must be a number >= 0, got '7'"),
    ("edit", {"image_guidance_scale": -0.5}, r"`image_guidance_scale` must be a number >= 0, got -0.5"),
    ("t2i", {"image_guidance_scale": 1.5}, r"`image_guidance_scale` must be None: task 't2i' has no image guidance"),
    ("sr", {"guidance_scale": 7.5}, r"`guidance_scale` must be None: task 'sr' runs without guidance"),
    ("t2i", {"prompt": 3}, r"`prompt` must be a string or a non-empty list of strings, got 3"),
    ("t2i", {"prompt": []}, r"`prompt` must be a string or a non-empty list of strings, got \[\]"),
    ("t2i", {"prompt": None}, r"`prompt` is required by task 't2i'"),
    ("sr", {"prompt": "sharper"}, r"`prompt` must be None: task 'sr' is trained with the empty prompt, got 'sharper'"),
    ("edit", {"prompt": ["a", "b", "c"], "image": [rgb(), rgb()]},
     r"`prompt` has 3 entries but `image` holds 2 images"),
    ("t2i", {"negative_prompt": 5}, r"`negative_prompt` must be a string or a non-empty list of strings, got 5"),
    ("t2i", {"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]},
     r"`negative_prompt` has 3 entries for a batch of 2 prompts"),
    ("sr", {"negative_prompt": "blurry"}, r"`negative_prompt` must be None: task 'sr' runs without guidance"),
    ("t2i", {"output_type": "jpg"}, r"`output_type` must be one of \('pil', 'np', 'pt', 'latent'\), got 'jpg'"),
    ("t2i", {"prompt": ["a", "b"], "generator": [gen(0)] * 3},
     r"`generator` as a list must hold one torch.Generator per image \(2 prompts x 1 = 2\), got 3 items"),
    ("t2i", {"generator": 0}, r"`generator` must be None, a torch.Generator or a list of them, got 0"),
    ("t2i", {"num_images_per_prompt": 0}, r"`num_images_per_prompt` must be an integer >= 1, got 0"),
    ("t2i", {"latents": torch.zeros(1, 4, 4, 4)},
     r"`latents` must be a tensor of shape \(1, 4, 8, 8\) for this call, got \(1, 4, 4, 4\)"),
]


@pytest.mark.parametrize("task, overrides, message", ERRORS, ids=[m[:40] for _, _, m in ERRORS])
def test_check_inputs_names_the_argument_and_value(pipe, model, task, overrides, message):
    name = task if isinstance(task, str) and task in TASKS else "t2i"
    kwargs = {**inputs_for(name), "num_inference_steps": 2, **overrides}
    calls = []
    handle = pipe.text_encoder.register_forward_pre_hook(lambda *args: calls.append("text_encoder"))
    try:
        with unet_calls(model) as unet, pytest.raises(ValueError, match=message):
            pipe(task, **kwargs)
    finally:
        handle.remove()
    assert calls == [] and unet == []  # nothing ran before the error
