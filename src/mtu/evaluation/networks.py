"""The networks the metrics run: CLIP (embeddings), LPIPS on an AlexNet backbone, and FID feature extractors.

LPIPS (Zhang et al., 2018) is computed here rather than by torchmetrics' `LearnedPerceptualImagePatchSimilarity`,
whose backbones come from torchvision (which does not import beside every torch build, e.g. the CPU wheel this
project pins). The formula, the input scaling and the linear heads are torchmetrics' (`_LPIPS`, itself a copy of the
authors' `lpips` package): the heads are read from the file torchmetrics ships, and `AlexNetFeatures` is
torchvision's `alexnet().features` layer for layer, so torchvision's weight file loads into it unchanged. A test
checks this module against torchmetrics' `_LPIPS` run on the same backbone.

Images enter every network as uint8 tensors (N, 3, H, W): the 8-bit PNGs an evaluation writes, as read back.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError

ALEXNET_CHANNELS = (64, 192, 384, 256, 256)  # channels of the five ReLU outputs LPIPS reads
# LPIPS' input scaling ([-1, 1] in, ImageNet-like statistics out), as torchmetrics' `ScalingLayer`.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_MIN_SIZE = 32  # smaller inputs leave AlexNet's second max-pool nothing to pool


class AlexNetFeatures(nn.Sequential):
    """torchvision's `alexnet().features` (same layers and indices, so its `features.*` weights load as they are),
    with the channel counts as an argument so that tests can build a tiny one of the same shape."""

    relu_indices = (1, 4, 7, 9, 11)  # the ReLU outputs LPIPS compares

    def __init__(self, channels: tuple[int, ...] = ALEXNET_CHANNELS):
        c1, c2, c3, c4, c5 = channels
        super().__init__(
            nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.channels = tuple(channels)

    def relu_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs (N, C_k, H_k, W_k) of `images` (N, 3, H, W), scaled as LPIPS scales them."""
        outputs, hidden = [], images
        for index, layer in enumerate(self):
            hidden = layer(hidden)
            if index in self.relu_indices:
                outputs.append(hidden)  # each next layer makes a new tensor, so the in-place ReLUs keep these
            if index == self.relu_indices[-1]:
                break
        return outputs


def _unit_normalize(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each position's feature vector scaled to unit length (LPIPS' `normalize_tensor`)."""
    return features / torch.sqrt(eps + torch.sum(features ** 2, dim=1, keepdim=True))


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity (Zhang et al., 2018), v0.1, on an AlexNet-shaped backbone.

    Args:
        backbone: `AlexNetFeatures` (ImageNet weights for the real metric).
        heads: One non-negative (1, C_k, 1, 1) weight per ReLU output: the learned linear layers.
    """

    def __init__(self, backbone: AlexNetFeatures, heads: list[torch.Tensor]):
        super().__init__()
        if [tuple(head.shape) for head in heads] != [(1, c, 1, 1) for c in backbone.channels]:
            raise InputError(f"`heads` must be one (1, C, 1, 1) weight per backbone layer {backbone.channels}, got "
                             f"{[tuple(head.shape) for head in heads]}.")
        self.backbone = backbone.eval().requires_grad_(False)
        self.heads = nn.ParameterList([nn.Parameter(head.detach().clone(), requires_grad=False) for head in heads])
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE)[None, :, None, None], persistent=False)

    @staticmethod
    def check_images(name: str, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"`{name}` must be a (N, 3, H, W) tensor, got "
                             f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}.")
        if not images.is_floating_point() or images.min() < -1 or images.max() > 1:
            raise InputError(f"`{name}` must be floats in [-1, 1] (LPIPS' input range), got dtype {images.dtype} "
                             f"with values in [{images.min().item():g}, {images.max().item():g}].")
        if min(images.shape[-2:]) < LPIPS_MIN_SIZE:
            raise InputError(f"`{name}` must be at least {LPIPS_MIN_SIZE} px a side for LPIPS' AlexNet, got "
                             f"{tuple(images.shape[-2:])}.")

    @torch.no_grad()
    def forward(self, first: torch.Tensor, second: torch.Tensor, spatial: bool = False) -> torch.Tensor:
        """LPIPS of each pair: (N,) distances, or with `spatial` the (N, 1, H, W) map (each layer's map upsampled
        bilinearly to the input size, then summed, as the `lpips` package's `spatial=True`).

        Args:
            first, second: (N, 3, H, W) images in [-1, 1].
        """
        self.check_images("first", first)
        self.check_images("second", second)
        features = [self.backbone.relu_outputs((images - self.shift) / self.scale) for images in (first, second)]
        total = 0
        for head, first_layer, second_layer in zip(self.heads, *features):
            difference = (_unit_normalize(first_layer) - _unit_normalize(second_layer)) ** 2  # (N, C_k, H_k, W_k)
            layer_map = F.conv2d(difference, head)  # (N, 1, H_k, W_k)
            if spatial:
                total = total + F.interpolate(layer_map, size=first.shape[-2:], mode="bilinear", align_corners=False)
            else:
                total = total + layer_map.mean(dim=(2, 3))  # (N, 1)
        return total if spatial else total[:, 0]


def uint8_to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1.0


class Float64Features(nn.Module):
    """A feature extractor whose features leave it in float64, so torchmetrics' FID and KID keep float64 to the end
    (they return the dtype of the features), with the `num_features` torchmetrics reads instead of probing."""

    def __init__(self, extractor: nn.Module, num_features: int):
        super().__init__()
        self.extractor = extractor
        self.num_features = num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(images).reshape(images.shape[0], -1).double()  # (N, num_features)


class TinyFeatures(nn.Module):
    """A small random conv net standing in for Inception in code-path checks: uint8 (N, 3, H, W) -> (N, dim)."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, dim, 3, stride=2, padding=1), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dim = dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images.float() / 255.0)


class ClipEmbedder:
    """L2-normalised CLIP embeddings of images and texts (transformers' `CLIPModel` and its processor).

    Preprocessing is the processor's: images resized (shortest side, bicubic) and centre-cropped to the model's
    input size, scaled and normalised with CLIP's mean and std; texts tokenized and cut at the model's length.
    """

    def __init__(self, model, processor, device: torch.device | str = "cpu"):
        self.model = model.eval().to(device)
        self.processor = processor
        self.device = torch.device(device)
        self.max_length = model.config.text_config.max_position_embeddings

    @staticmethod
    def _features(output) -> torch.Tensor:
        # transformers < 5 returns the projected tensor, 5.x an output whose pooler_output holds it
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    @torch.no_grad()
    def images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> (N, D) unit vectors (float64)."""
        arrays = [image.permute(1, 2, 0).cpu().numpy() for image in images]  # (H, W, 3) uint8 each
        pixels = self.processor(images=arrays, return_tensors="pt")["pixel_values"].to(self.device)
        features = self._features(self.model.get_image_features(pixel_values=pixels)).double()
        return features / features.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        """N strings -> (N, D) unit vectors (float64)."""
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True,
                                max_length=self.max_length)
        features = self._features(self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device))).double()
        return features / features.norm(dim=-1, keepdim=True)
