"""The SR degradation is seeded, lowers the resolution, and validates its ranges."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtu import InputError
from mtu.data import DegradationConfig, degrade
from mtu.data.imaging import to_tensor

from .data_builders import make_image


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    mse = F.mse_loss(other, reference).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.fixture
def image() -> torch.Tensor:
    return to_tensor(make_image(3, size=(64, 48)))  # (3, 48, 64) in [0, 1]


def run(image, seed, **kwargs):
    return degrade(image, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_same_seed_same_output_and_different_seeds_differ(image):
    assert torch.equal(run(image, 0), run(image, 0))
    assert not torch.equal(run(image, 0), run(image, 1))


@pytest.mark.parametrize("scale", [2, 4])
def test_output_is_low_resolution_and_degraded(image, scale):
    low = run(image, 5, scale=scale)
    assert low.shape == (3, 48 // scale, 64 // scale)
    assert 0 <= low.min() and low.max() <= 1
    upsampled = F.interpolate(low[None], size=image.shape[-2:], mode="bicubic", align_corners=False)[0].clamp(0, 1)
    quality = psnr(image, upsampled)
    assert math.isfinite(quality) and quality < 40


def test_every_seed_degrades(image):
    # Over many draws (mild blur, weak noise, high JPEG quality included) the output never equals the input.
    for seed in range(10):
        upsampled = F.interpolate(run(image, seed)[None], size=image.shape[-2:], mode="bicubic")[0].clamp(0, 1)
        assert psnr(image, upsampled) < 40


def test_config_ranges_narrow_the_draws(image):
    mild = DegradationConfig(blur_kernel_size=(3, 3), blur_sigma=(0.2, 0.2), noise_sigma=(0.0, 0.0),
                             gaussian_noise_prob=1.0, jpeg_quality=(100, 100))
    strong = DegradationConfig(blur_sigma=(3.0, 3.0), noise_sigma=(30.0, 30.0), gaussian_noise_prob=1.0,
                               jpeg_quality=(10, 10))

    def quality(config):
        upsampled = F.interpolate(run(image, 0, config=config)[None], size=image.shape[-2:], mode="bicubic")[0]
        return psnr(image, upsampled.clamp(0, 1))

    assert quality(mild) > quality(strong) + 3


def test_tiny_images_get_a_kernel_that_fits(image):
    tiny = image[:, :4, :4]
    assert run(tiny, 0, config=DegradationConfig(blur_kernel_size=(21, 21))).shape == (3, 2, 2)


@pytest.mark.parametrize("field, value", [
    ("blur_kernel_size", (8, 10)), ("blur_kernel_size", (9, 7)), ("blur_sigma", (0.0, 1.0)),
    ("jpeg_quality", (0, 50)), ("anisotropic_prob", 1.5), ("resize_modes", ("nearest",)),
    ("noise_sigma", "strong"), ("jpeg_subsampling", "4:1:1"),
])
def test_config_errors_name_field_and_value(field, value):
    with pytest.raises(InputError, match=rf"^{field}: .*{str(value)[:3].replace('(', '[(]')}") as caught:
        DegradationConfig(**{field: value})
    assert caught.value.field == field


def test_bad_inputs_are_rejected(image):
    with pytest.raises(ValueError, match="shape"):
        degrade(image[0])
    with pytest.raises(InputError, match="^scale: "):
        degrade(image, scale=0)


def test_full_chroma_jpeg_keeps_a_small_shapes_colour():
    # A 3-pixel red square on gray, JPEG-compressed at 16 px: 4:2:0 averages its colour over 2x2 blocks with the
    # background; 4:4:4 keeps it. The toy world's SR inputs rely on this (benchmarks/sr_information.py).
    image = torch.full((3, 16, 16), 0.5)
    image[:, 6:9, 6:9] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    no_change = dict(blur_kernel_size=(1, 1), blur_sigma=(1e-3, 1e-3), noise_sigma=(0.0, 0.0),
                     poisson_scale=(0.0, 0.0), gaussian_noise_prob=1.0, jpeg_quality=(95, 95), resize_modes=("area",))

    def error(subsampling):
        config = DegradationConfig(jpeg_subsampling=subsampling, **no_change)
        out = degrade(image, scale=1, generator=torch.Generator().manual_seed(0), config=config)
        return float((out[:, 6:9, 6:9] - image[:, 6:9, 6:9]).abs().max())

    assert error("4:4:4") < 0.1 < 0.25 < error("4:2:0")
