"""LPIPS without torchvision: equal to torchmetrics' own `_LPIPS` on the same backbone, zero for identical images,
its input range enforced, torchvision's AlexNet layout, and the inside / outside-the-mask split (issue 16)."""

from __future__ import annotations

import pytest
import torch

import torchmetrics.functional.image.lpips as tm_lpips
from mtu.errors import InputError
from mtu.evaluation.metrics import ScoringBatch, _lpips_region, lpips
from mtu.evaluation.networks import LPIPS, AlexNetFeatures
from mtu.evaluation.weights import TINY_LPIPS_CHANNELS, _lpips_heads


def random_images(count: int, size: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def alexnet_lpips():
    """Full-size AlexNet at random init (no ImageNet weights here) with the real LPIPS heads torchmetrics ships."""
    torch.manual_seed(0)
    backbone = AlexNetFeatures()
    heads, _ = _lpips_heads()
    return LPIPS(backbone, heads), backbone


def test_lpips_equals_torchmetrics_lpips_on_the_same_backbone(alexnet_lpips, monkeypatch):
    ours, backbone = alexnet_lpips
    # torchmetrics takes its backbone from torchvision (which does not import here): hand it ours instead.
    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", lambda net, pretrained=False: backbone)
    first, second = random_images(3, seed=1), random_images(3, seed=2)
    reference = tm_lpips._LPIPS(pretrained=True, net="alex").eval()
    assert torch.allclose(ours(first, second), reference(first, second).flatten(), rtol=1e-5, atol=1e-7)
    reference_spatial = tm_lpips._LPIPS(pretrained=True, net="alex", spatial=True).eval()
    assert torch.allclose(ours(first, second, spatial=True), reference_spatial(first, second), rtol=1e-5, atol=1e-7)


def test_lpips_of_an_image_with_itself_is_zero(alexnet_lpips):
    ours, _ = alexnet_lpips
    images = random_images(2)
    assert ours(images, images).abs().max().item() == 0.0
    assert ours(images, random_images(2, seed=5)).min().item() > 0


@pytest.mark.parametrize("bad, message", [
    (lambda x: x * 1.5, r"in \[-1, 1\]"),                       # outside LPIPS' range
    (lambda x: ((x + 1) * 127.5).to(torch.uint8), "floats"),     # uint8 pixels, not [-1, 1]
    (lambda x: x[:, :1], r"\(N, 3, H, W\)"),                     # one channel
    (lambda x: x[..., :16, :16], "at least 32 px"),              # too small for AlexNet
])
def test_lpips_refuses_inputs_outside_its_contract(alexnet_lpips, bad, message):
    ours, _ = alexnet_lpips
    images = random_images(1)
    with pytest.raises(InputError, match=message):
        ours(bad(images), images)


def test_alexnet_features_have_torchvision_layout():
    # torchvision's alexnet().features: conv layers at 0, 3, 6, 8, 10 with these shapes, so its state dict loads as is
    expected = {"0": (64, 3, 11, 11), "3": (192, 64, 5, 5), "6": (384, 192, 3, 3), "8": (256, 384, 3, 3),
                "10": (256, 256, 3, 3)}
    state = AlexNetFeatures().state_dict()
    assert {key: tuple(value.shape) for key, value in state.items() if key.endswith("weight")} == {
        f"{index}.weight": shape for index, shape in expected.items()}
    assert len(AlexNetFeatures()) == 13


def test_lpips_inside_and_outside_the_mask():
    torch.manual_seed(0)
    backbone = AlexNetFeatures(TINY_LPIPS_CHANNELS)
    model = LPIPS(backbone, [torch.rand(1, channels, 1, 1) for channels in TINY_LPIPS_CHANNELS])
    target = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    output = target.clone()
    output[:, :, :, 48:] = 255 - output[:, :, :, 48:]  # changed in the right quarter only
    masks = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    masks[:, :, :, 48:] = True
    batch = ScoringBatch(output, targets=target, masks=masks, networks={"alexnet": model})
    inside, outside = _lpips_region(batch, inside=True), _lpips_region(batch, inside=False)
    assert (inside > 2 * outside).all()  # the distance sits where the image changed
    whole = lpips(batch)
    assert (whole > 0).all()
    empty = ScoringBatch(output, targets=target, masks=torch.zeros_like(masks), networks={"alexnet": model})
    assert torch.isnan(_lpips_region(empty, inside=True)).all()  # no region: left out, counted as excluded
