"""Bad pipeline inputs (issue 13, points 7 and 8): non-finite numbers are refused by name before any model runs,
sampling that turns non-finite stops with one line instead of writing a black image, a prompt longer than the text
encoder takes is cut with a warning that says how much, and `mtu generate` checks its device and its output path
before sampling."""

from __future__ import annotations

import math
import warnings

import numpy as np
import PIL.Image
import pytest
import torch

import mtu
from mtu.architectures import build_unet
from mtu.cli import main
from mtu.conditioning import PromptTruncatedWarning
from mtu.errors import InputError
from mtu.pipelines import MTUPipeline
from mtu.pipelines.checks import check_call_inputs

from .conftest import nudge
from .diffusers_parts import tiny_scheduler, tiny_text_encoder, tiny_tokenizer, tiny_vae
from .test_pipeline_mtu import one_thread  # noqa: F401 (autouse fixture)
from .training_parts import tiny_pipeline_folder

TASKS = ["t2i", "edit", "inpaint_mask"]
PROMPT = "make the circle blue"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    model = mtu.upcycle(build_unet("tiny", seed=0), mtu.MTUConfig(tasks=TASKS, num_experts=2)).eval()
    nudge(model)
    pipe = MTUPipeline(tiny_vae(), tiny_text_encoder(), tiny_tokenizer(tmp_path_factory.mktemp("tok")), model,
                       tiny_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def no_sampling(pipe, monkeypatch):
    """The pipeline fails the test if it gets as far as encoding a prompt."""
    monkeypatch.setattr(pipe, "encode_text", lambda *args, **kwargs: pytest.fail("the check came too late"))
    return pipe


def rgb(size: int = 16) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize("task, kwargs, message", [
    ("t2i", {"guidance_scale": math.nan}, r"`guidance_scale` must be finite \(NaN would switch guidance off, inf "
                                          r"gives a black image\), got nan\."),
    ("t2i", {"guidance_scale": math.inf}, r"`guidance_scale` must be finite .*, got inf\."),
    ("t2i", {"guidance_scale": np.float32("nan")}, r"`guidance_scale` must be finite .*, got (np\.float32\()?nan\)?\."),
    ("edit", {"image_guidance_scale": math.nan}, r"`image_guidance_scale` must be finite .*, got nan\."),
    ("edit", {"image_guidance_scale": math.inf}, r"`image_guidance_scale` must be finite .*, got inf\."),
    ("edit", {"guidance_scale": -math.inf}, r"`guidance_scale` must be a number >= 0, got -inf\."),
])
def test_non_finite_guidance_is_refused_by_name(no_sampling, task, kwargs, message):
    image = rgb() if task == "edit" else None
    with pytest.raises(InputError, match=message):
        no_sampling(task, PROMPT, image=image, num_inference_steps=2, **kwargs)


def test_non_finite_pixels_masks_and_latents_are_refused(no_sampling):
    pixels = torch.zeros(1, 3, 16, 16)
    pixels[0, 0, 3, 4] = math.nan
    with pytest.raises(InputError, match=r"`image` values must be finite, got 1 NaN or inf value\(s\) in a Tensor"):
        no_sampling("edit", PROMPT, image=pixels, num_inference_steps=2)
    array = np.full((16, 16, 3), 0.5, np.float32)
    array[0, 0] = np.inf
    with pytest.raises(InputError, match=r"`image` values must be finite, got 3 NaN or inf value\(s\) in a ndarray"):
        no_sampling("edit", PROMPT, image=array, num_inference_steps=2)
    mask = np.full((16, 16), np.nan, np.float32)
    with pytest.raises(InputError, match=r"`mask_image` values must be finite, got 256 NaN"):
        no_sampling("inpaint_mask", PROMPT, image=rgb(), mask_image=mask, num_inference_steps=2)
    latents = torch.zeros(1, 4, 8, 8)
    latents[..., 0] = math.inf
    with pytest.raises(InputError, match=r"`latents` must be finite, got a tensor with 32 NaN or inf value\(s\)"):
        no_sampling("t2i", PROMPT, latents=latents, num_inference_steps=2)


def test_sampling_that_turns_non_finite_stops_instead_of_decoding(pipe, monkeypatch):
    monkeypatch.setattr(pipe, "decode", lambda *args: pytest.fail("non-finite latents were decoded"))
    name, param = next(iter(pipe.unet.mtu_named_parameters()))
    saved = param.detach().clone()
    with torch.no_grad():
        param.fill_(math.nan)  # an adapter with NaN weights (a diverged run), in memory
    try:
        with pytest.raises(InputError, match=r"^sampling task 't2i' gave non-finite latents \(NaN or inf\) at step 1 "
                                             r"of 2 \(text guidance, `guidance_scale` 7.5\); the model's weights"):
            pipe("t2i", PROMPT, num_inference_steps=2)
    finally:
        with torch.no_grad():
            param.copy_(saved)


def test_a_prompt_longer_than_the_encoder_takes_is_cut_with_a_warning(pipe):
    # The tiny tokenizer gives one token per one-letter word; with the start and end tokens, 75 words fill 77.
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        fits = pipe("t2i", "a " * 75, num_inference_steps=1, generator=torch.Generator().manual_seed(0),
                    output_type="np").images
    with pytest.warns(PromptTruncatedWarning, match=r"^`prompt` is longer than the 77 tokens the text encoder takes: "
                                                    r"it was truncated, dropping its last 1 token \(from 'b"):
        pipe("t2i", "a " * 75 + "b", num_inference_steps=1, output_type="np")
    with pytest.warns(PromptTruncatedWarning, match=r"dropping its last 125 tokens"):
        cut = pipe("t2i", "a " * 200, num_inference_steps=1, generator=torch.Generator().manual_seed(0),
                   output_type="np").images
    np.testing.assert_array_equal(cut, fits)  # what is kept is the first 77 tokens, as before
    with pytest.warns(PromptTruncatedWarning, match=r"^`negative_prompt` is longer than the 77 tokens"):
        pipe("t2i", PROMPT, negative_prompt="c " * 90, num_inference_steps=1, output_type="np")
    with pytest.warns(PromptTruncatedWarning, match=r"^`prompt`\[1\] \(and 1 more\) is longer than the 77"):
        pipe("t2i", [PROMPT, "a " * 80, "a " * 90], num_inference_steps=1, output_type="np")


def test_check_call_inputs_takes_its_options_by_name(pipe):
    specs = pipe.unet.task_specs
    with pytest.raises(TypeError, match="positional argument"):
        check_call_inputs(specs, "sd", "edit", PROMPT, rgb(), None, None, None, 2, 7.5, 1.5)  # scales swappable
    plan = check_call_inputs(specs, "sd", "edit", prompt=PROMPT, image=rgb(), num_inference_steps=2,
                             guidance_scale=7.5, image_guidance_scale=1.5)
    assert (plan.guidance_scale, plan.image_guidance_scale) == (7.5, 1.5)


def test_sampling_defaults_must_be_finite(pipe):
    with pytest.raises(InputError, match=r"`sampling_defaults`: task 't2i' `guidance_scale` must be a finite number "
                                         r">= 0, got nan"):
        pipe.set_sampling_defaults({"t2i": {"guidance_scale": math.nan}})


# ---- `mtu generate` ----

@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """An adapter over a saved tiny SD pipeline."""
    root = tmp_path_factory.mktemp("generate")
    base = tiny_pipeline_folder(root)
    mtu.upcycle(mtu.load_base_unet(str(base)), mtu.MTUConfig(tasks=["t2i"], num_experts=2)).save_pretrained(
        root / "adapter")
    return root / "adapter"


def generate_error(capsys, *argv) -> str:
    capsys.readouterr()
    code = main([str(arg) for arg in argv])
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("mtu: error: ")]  # beside progress bars
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_generate_checks_the_device_and_the_output_before_loading(adapter, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(MTUPipeline, "from_base", lambda *args, **kwargs: pytest.fail("loaded before the checks"))
    command = ["generate", "--model", adapter, "--task", "t2i", "--prompt", PROMPT]
    err = generate_error(capsys, *command, "--out", tmp_path / "o.png", "--device", "cuda:99")
    assert err.startswith("mtu: error: `device` 'cuda:99' is not available here: torch sees ")
    if not torch.cuda.is_available():
        err = generate_error(capsys, *command, "--out", tmp_path / "o.png", "--device", "cuda")
        assert err == "mtu: error: `device` 'cuda' is not available here: torch sees 0 cuda device(s); use 'cpu'."
    err = generate_error(capsys, *command, "--out", tmp_path / "o.png", "--device", "gpu")
    assert err == ("mtu: error: `device` must be a torch device such as 'cpu', 'cuda', 'cuda:1' or 'mps', got "
                   "'gpu'.")
    (tmp_path / "file").write_text("x")
    err = generate_error(capsys, *command, "--out", tmp_path / "file" / "o.png")
    assert "--out: " in err and "cannot be created: " in err and "is a file, not a folder" in err
    monkeypatch.setattr("mtu.outputs.os.access", lambda path, mode: False)  # a read-only folder, simulated
    err = generate_error(capsys, *command, "--out", tmp_path / "o.png")
    assert "cannot be written: no write permission in" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]


def test_generate_writes_no_image_when_sampling_turns_non_finite(adapter, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    blown = tmp_path / "blown"
    blown.mkdir()
    for path in adapter.iterdir():
        (blown / path.name).write_bytes(path.read_bytes())
    weights = load_file(blown / "mtu_model.safetensors")
    # finite weights (they load) whose activations overflow float32 in the first step
    save_file({name: tensor * 1e30 for name, tensor in weights.items()}, blown / "mtu_model.safetensors")
    err = generate_error(capsys, "generate", "--model", blown, "--task", "t2i", "--prompt", PROMPT, "--steps", "2",
                         "--out", tmp_path / "o.png")
    assert err.startswith("mtu: error: sampling task 't2i' gave non-finite latents (NaN or inf) at step 1 of 2")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["demo", "--lr", "inf"], "mtu: error: `lr` must be finite, got inf."),
    (["demo", "--lr", "nan"], "mtu: error: `lr` must be > 0, got nan."),
    (["toyworld", "pretrain", "--lr", ".inf"], "mtu: error: `lr` must be finite, got inf."),
    (["toyworld", "pretrain", "--vae_lr", ".inf"], "mtu: error: `vae_lr` must be finite, got inf."),
    (["toyworld", "pretrain", "--kl_weight", ".inf"], "mtu: error: `kl_weight` must be finite, got inf."),
])
def test_the_toy_worlds_learning_rates_must_be_finite(capsys, argv, message):
    """An infinite learning rate would train to NaN weights and write them."""
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == message


def test_training_warns_once_that_long_prompts_are_cut():
    """The training text encoding truncates as the pipelines do, and says so once per run, not once per batch."""
    import warnings

    from transformers import CLIPTokenizer

    from mtu.conditioning import PromptTruncatedWarning
    from mtu.toyworld.components import shipped_base
    from mtu.training.components import prompt_token_ids

    tokenizer = CLIPTokenizer.from_pretrained(str(shipped_base()), subfolder="tokenizer")
    long_prompt = " ".join(["red circle"] * 60)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            ids = prompt_token_ids(tokenizer, ["a red circle", long_prompt], "cpu")
    cut = [w for w in caught if issubclass(w.category, PromptTruncatedWarning)]
    assert len(cut) == 1 and "longer than the 77 tokens" in str(cut[0].message)
    assert ids.shape == (2, 77)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        prompt_token_ids(tokenizer, ["a red circle"], "cpu")
    assert not caught
