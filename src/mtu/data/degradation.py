"""Seeded Real-ESRGAN-style first-order degradation: the low-resolution input of the `sr` task (App. A.1).

The paper makes SR inputs from high-resolution images by "applying degradations like Poisson and Gaussian blur
and downscaling them by half". We follow the first stage of Real-ESRGAN (Wang et al., 2021): blur, downscale,
noise, JPEG. The generalized-Gaussian / plateau kernels, the sinc filter and the second stage are left out.
Every random draw comes from the caller's `torch.Generator`, so the same seed gives the same output.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError

RESIZE_MODES = ("area", "bilinear", "bicubic")
CHROMA_SUBSAMPLINGS = ("4:2:0", "4:2:2", "4:4:4")


def _check_range(name: str, value, low: float, high: float, integer: bool = False) -> tuple:
    """Validates a (min, max) range inside [low, high]; returns it as a tuple."""
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(item, (int, float)) and not isinstance(item, bool) for item in value
    )
    if ok:
        ok = low <= value[0] <= value[1] <= high and (not integer or all(float(v).is_integer() for v in value))
    if not ok:
        kind = "integers" if integer else "numbers"
        raise InputError(f"must be a pair (min, max) of {kind} with {low} <= min <= max <= {high}, got {value!r}.",
                         field=name)
    return tuple(int(v) for v in value) if integer else tuple(float(v) for v in value)


def _check_probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InputError(f"must be a probability in [0, 1], got {value!r}.", field=name)
    return float(value)


@dataclass
class DegradationConfig:
    """Ranges of the first-order degradation; each value is drawn uniformly from its range per image.

    Defaults are Real-ESRGAN's first-stage settings (`options/train_realesrnet_x4plus.yml`).

    Args:
        blur_kernel_size: (min, max) odd side of the Gaussian blur kernel, in pixels of the high-res image.
        blur_sigma: (min, max) standard deviation of the blur along each kernel axis, in pixels.
        anisotropic_prob: Chance of an anisotropic kernel (two sigmas and a random rotation in [-pi, pi]);
            otherwise the kernel is isotropic.
        resize_modes: Interpolations the downscale picks from uniformly; any of "area", "bilinear", "bicubic".
        gaussian_noise_prob: Chance of Gaussian noise; otherwise Poisson noise is added.
        noise_sigma: (min, max) Gaussian noise standard deviation, in 8-bit levels (/255).
        poisson_scale: (min, max) multiplier of the Poisson (shot) noise.
        gray_noise_prob: Chance that the noise is the same on all three channels.
        jpeg_quality: (min, max) JPEG quality (1-100) of the final compression.
        jpeg_subsampling: Chroma subsampling of the JPEG: "4:2:0" (the encoders' default, as Real-ESRGAN's
            OpenCV), "4:2:2" or "4:4:4" (full colour resolution). Halving the colour resolution costs a photo of
            hundreds of pixels little, but wipes out the colour of a few-pixel shape (the toy world uses 4:4:4).
    """

    blur_kernel_size: tuple[int, int] = (7, 21)
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    anisotropic_prob: float = 0.5
    resize_modes: tuple[str, ...] = RESIZE_MODES
    gaussian_noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (1.0, 30.0)
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_quality: tuple[int, int] = (30, 95)
    jpeg_subsampling: str = "4:2:0"

    def __post_init__(self):
        self.blur_kernel_size = _check_range("blur_kernel_size", self.blur_kernel_size, 1, 99, integer=True)
        if any(size % 2 == 0 for size in self.blur_kernel_size):
            raise InputError(f"must hold odd sizes, got {self.blur_kernel_size!r}.", field="blur_kernel_size")
        self.blur_sigma = _check_range("blur_sigma", self.blur_sigma, 1e-3, 50.0)
        self.noise_sigma = _check_range("noise_sigma", self.noise_sigma, 0.0, 255.0)
        self.poisson_scale = _check_range("poisson_scale", self.poisson_scale, 0.0, 100.0)
        self.jpeg_quality = _check_range("jpeg_quality", self.jpeg_quality, 1, 100, integer=True)
        if self.jpeg_subsampling not in CHROMA_SUBSAMPLINGS:
            raise InputError(f"must be one of {CHROMA_SUBSAMPLINGS}, got {self.jpeg_subsampling!r}.",
                             field="jpeg_subsampling")
        for name in ("anisotropic_prob", "gaussian_noise_prob", "gray_noise_prob"):
            setattr(self, name, _check_probability(name, getattr(self, name)))
        modes = (self.resize_modes,) if isinstance(self.resize_modes, str) else tuple(self.resize_modes)
        if not modes or any(mode not in RESIZE_MODES for mode in modes):
            raise InputError(f"must be a non-empty list drawn from {RESIZE_MODES}, got {self.resize_modes!r}.",
                             field="resize_modes")
        self.resize_modes = modes

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _chance(generator: torch.Generator, probability: float) -> bool:
    return torch.rand((), generator=generator).item() < probability


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, angle: float) -> torch.Tensor:
    """A normalized (size, size) Gaussian kernel with axis sigmas rotated by `angle` radians."""
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    covariance = rotation @ torch.diag(torch.tensor([sigma_x ** 2, sigma_y ** 2])) @ rotation.T
    inverse = torch.linalg.inv(covariance)
    axis = torch.arange(size, dtype=torch.float32) - size // 2
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)  # (size, size, 2) as (x, y)
    exponent = torch.einsum("hwi,ij,hwj->hw", grid, inverse, grid)
    kernel = torch.exp(-0.5 * exponent)
    return kernel / kernel.sum()


def _blur(image: torch.Tensor, config: DegradationConfig, generator: torch.Generator) -> torch.Tensor:
    low, high = config.blur_kernel_size
    size = low + 2 * int(torch.randint(0, (high - low) // 2 + 1, (), generator=generator))
    # Reflect padding needs pad < side, so tiny images get a smaller kernel.
    size = min(size, 2 * min(image.shape[-2:]) - 1)
    sigma_x = _uniform(generator, *config.blur_sigma)
    if _chance(generator, config.anisotropic_prob):
        sigma_y = _uniform(generator, *config.blur_sigma)
        angle = _uniform(generator, -math.pi, math.pi)
    else:
        sigma_y, angle = sigma_x, 0.0
    kernel = gaussian_kernel(size, sigma_x, sigma_y, angle)
    padded = F.pad(image[None], [size // 2] * 4, mode="reflect")  # (1, 3, H + size - 1, W + size - 1)
    weight = kernel.expand(3, 1, size, size)
    return F.conv2d(padded, weight, groups=3)[0]


def _downscale(image: torch.Tensor, scale: int, config: DegradationConfig, generator) -> torch.Tensor:
    mode = config.resize_modes[int(torch.randint(0, len(config.resize_modes), (), generator=generator))]
    height, width = image.shape[-2:]
    size = (max(1, round(height / scale)), max(1, round(width / scale)))
    extra = {} if mode == "area" else {"align_corners": False, "antialias": True}
    return F.interpolate(image[None], size=size, mode=mode, **extra)[0].clamp(0, 1)


def _noise(image: torch.Tensor, config: DegradationConfig, generator: torch.Generator) -> torch.Tensor:
    gray = _chance(generator, config.gray_noise_prob)
    if _chance(generator, config.gaussian_noise_prob):
        sigma = _uniform(generator, *config.noise_sigma) / 255.0
        shape = (1, *image.shape[-2:]) if gray else image.shape
        noise = torch.randn(shape, generator=generator) * sigma
    else:
        scale = _uniform(generator, *config.poisson_scale)
        source = image.mean(0, keepdim=True) if gray else image
        # Real-ESRGAN: count photons with the number of distinct levels, 2 ** ceil(log2(unique values)).
        levels = 2 ** math.ceil(math.log2(max(2, len(torch.unique((source * 255).round())))))
        noise = (torch.poisson(source * levels, generator=generator) / levels - source) * scale
    return (image + noise).clamp(0, 1)  # a (1, H, W) gray noise broadcasts over the channels


def _jpeg(image: torch.Tensor, quality: int, subsampling: str = "4:2:0") -> torch.Tensor:
    array = (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(decoded).permute(2, 0, 1).contiguous()


def degrade(image: torch.Tensor, scale: int = 2, generator: torch.Generator | None = None,
            config: DegradationConfig | None = None) -> torch.Tensor:
    """Blur, downscale by `scale`, add noise and JPEG-compress a (3, H, W) image in [0, 1].

    Args:
        image: Float tensor (3, H, W) with values in [0, 1] (the high-resolution target).
        scale: Integer downscale factor; the output is (3, round(H / scale), round(W / scale)).
        generator: Source of every random draw; None uses a fresh unseeded one.
        config: Ranges of the draws; None uses `DegradationConfig()`.

    Returns:
        The degraded low-resolution image, float (3, H / scale, W / scale) in [0, 1].
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise InputError(f"must be a float tensor of shape (3, H, W), got "
                         f"{getattr(image, 'shape', type(image).__name__)}.", field="image")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise InputError(f"must be an integer >= 1, got {scale!r}.", field="scale")
    config = config or DegradationConfig()
    if generator is None:
        generator = torch.Generator()
        generator.seed()  # non-deterministic on purpose: the caller asked for no seed
    degraded = _blur(image.float().clamp(0, 1), config, generator)
    degraded = _downscale(degraded, scale, config, generator)
    degraded = _noise(degraded, config, generator)
    low, high = config.jpeg_quality
    return _jpeg(degraded, int(torch.randint(low, high + 1, (), generator=generator)), config.jpeg_subsampling)
