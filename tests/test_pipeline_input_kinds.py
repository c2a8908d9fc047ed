"""The pipeline takes images as diffusers' pipelines do (issue 14, point 5): PIL images of any mode (converted),
lists mixing JPEG and PNG files, numpy and torch inputs and lists of them, and sizes that are not multiples of 8
(rounded down as diffusers' VaeImageProcessor does, with a warning naming both sizes); truly bad input is still
refused naming the argument. Each accepted input gives the image its plain RGB equivalent gives."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

import mtu
from mtu.architectures import build_unet
from mtu.errors import InputError
from mtu.pipelines import MTUPipeline
from mtu.pipelines.checks import ImageResizedWarning
from mtu.pipelines.inputs import convert_pil

from .conftest import nudge
from .diffusers_parts import tiny_scheduler, tiny_text_encoder, tiny_tokenizer, tiny_vae
from .test_pipeline_mtu import one_thread  # noqa: F401 (autouse fixture)

PROMPT = "make the circle blue"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    model = mtu.upcycle(build_unet("tiny", seed=0), mtu.MTUConfig(tasks=["edit", "sr", "inpaint_mask"],
                                                                   num_experts=4)).eval()
    nudge(model)
    pipe = MTUPipeline(tiny_vae(), tiny_text_encoder(), tiny_tokenizer(tmp_path_factory.mktemp("tok")), model,
                       tiny_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def photo(size=(16, 16), seed: int = 0) -> PIL.Image.Image:
    """An RGB image of `size` (width, height)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def half_mask(size=(16, 16)) -> PIL.Image.Image:
    pixels = np.zeros((size[1], size[0]), dtype=np.uint8)
    pixels[:, size[0] // 2:] = 255
    return PIL.Image.fromarray(pixels)


def run(pipe, task="edit", **kwargs):
    prompt = None if task == "sr" else PROMPT
    return pipe(task, prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np",
                **kwargs).images


def batch(pipe, images):
    """Two images edited in one call, each with its own seed."""
    return pipe("edit", [PROMPT] * 2, image=images, num_inference_steps=2, output_type="np",
                generator=[torch.Generator().manual_seed(seed) for seed in (0, 1)]).images


# ---- accepted ----

@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "P", "CMYK", "YCbCr"])
def test_any_pil_mode_is_converted_to_rgb(pipe, mode):
    image = photo().convert(mode)
    np.testing.assert_array_equal(run(pipe, image=image), run(pipe, image=image.convert("RGB")))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "1"])
def test_a_mask_of_any_pil_mode_is_converted_to_grey(pipe, mode):
    """As diffusers' mask processor converts it (`convert_to_grayscale`)."""
    image, mask = photo(seed=5), half_mask()
    np.testing.assert_array_equal(run(pipe, "inpaint_mask", image=image, mask_image=mask.convert(mode)),
                                  run(pipe, "inpaint_mask", image=image, mask_image=mask))


def test_sixteen_bit_grey_is_scaled_not_clipped(pipe):
    grey = np.random.default_rng(1).integers(0, 65536, (16, 16), dtype=np.uint16)
    image = PIL.Image.fromarray(grey)
    assert image.mode == "I;16"
    eight_bit = PIL.Image.fromarray(np.round(grey / 65535.0 * 255.0).astype(np.uint8)).convert("RGB")
    np.testing.assert_array_equal(np.asarray(convert_pil(image, "RGB", "image")), np.asarray(eight_bit))
    assert np.asarray(image.convert("RGB")).mean() > 250  # PIL's own conversion clips to white
    np.testing.assert_array_equal(run(pipe, image=image), run(pipe, image=eight_bit))


def test_a_list_may_mix_jpeg_and_png_files(pipe, tmp_path):
    photo(seed=1).save(tmp_path / "a.jpg")
    photo(seed=2).save(tmp_path / "b.png")
    with PIL.Image.open(tmp_path / "a.jpg") as jpeg, PIL.Image.open(tmp_path / "b.png") as png:
        assert type(jpeg) is not type(png)
        np.testing.assert_array_equal(batch(pipe, [jpeg, png]), batch(pipe, [jpeg.convert("RGB"), png.convert("RGB")]))


def test_numpy_and_torch_lists_match_pil(pipe):
    images = [photo(seed=3), photo(seed=4)]
    arrays = [np.asarray(image, dtype=np.float32) / 255.0 for image in images]
    tensors = [torch.from_numpy(array).permute(2, 0, 1) for array in arrays]
    reference = batch(pipe, images)
    for image in (arrays, np.stack(arrays), tensors, torch.stack(tensors), torch.stack(tensors) * 2 - 1):
        np.testing.assert_allclose(batch(pipe, image), reference, atol=1e-5, rtol=0)


def test_a_size_not_a_multiple_of_8_is_rounded_down_with_a_warning(pipe):
    image = photo(size=(28, 20))  # width 28, height 20
    with pytest.warns(ImageResizedWarning, match=r"`image` is 20x28 \(height x width\), not a multiple of 8: it is "
                                                 r"resized to 16x24"):
        output = run(pipe, image=image)
    assert output.shape == (1, 16, 24, 3)
    # resized as diffusers' VaeImageProcessor resizes a PIL image (Lanczos) to the rounded size
    np.testing.assert_array_equal(output, run(pipe, image=image.resize((24, 16), PIL.Image.LANCZOS)))


def test_rounding_resizes_the_mask_and_the_low_resolution_image_too(pipe):
    with pytest.warns(ImageResizedWarning, match=r"`image` \(and `mask_image`\) is 20x20"):
        assert run(pipe, "inpaint_mask", image=photo(size=(20, 20)), mask_image=half_mask((20, 20))).shape == (
            1, 16, 16, 3)
    array_mask = np.asarray(half_mask((20, 20)), dtype=np.float32)[..., None] / 255.0
    with pytest.warns(ImageResizedWarning):
        assert run(pipe, "inpaint_mask", image=photo(size=(20, 20)), mask_image=array_mask).shape == (1, 16, 16, 3)
    with pytest.warns(ImageResizedWarning, match=r"is 12x12 .* resized to 8x8"):
        assert run(pipe, "sr", image=photo(size=(12, 12))).shape == (1, 16, 16, 3)  # sr: twice the rounded size


# ---- still refused, naming the argument ----

BAD = [
    ({"image": photo(size=(5, 5))}, r"`image` must be at least 8x8 pixels, got 5x5"),
    ({"image": np.zeros((2, 1, 16, 16, 3), np.float32)}, r"`image` as a ndarray must have 3 or 4 dimensions"),
    ({"image": np.zeros((16, 16, 4), np.float32)}, r"`image` must have 3 channels, found 4"),
    ({"image": [photo(), np.zeros((16, 16, 3), np.float32)]},
     r"`image` list items must all be of one kind, got \['Image', 'ndarray'\]"),
    ({"image": PIL.Image.new("La", (16, 16))}, r"`image` must be a PIL image that converts to RGB \(conversion from La"),
    ({"image": photo(), "height": 20}, r"`height` must be a positive multiple of 8, got 20"),
    ({"image": photo(), "width": -16}, r"`width` must be a positive multiple of 8, got -16"),
]


@pytest.mark.parametrize("kwargs, message", BAD, ids=[message[:30] for _, message in BAD])
def test_truly_bad_images_are_still_refused(pipe, kwargs, message):
    with pytest.raises(InputError, match=message):
        run(pipe, **kwargs)
