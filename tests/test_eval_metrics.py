"""`mtu eval`'s metrics against independent computations: the Fréchet distance against scipy's sqrtm and a closed form,
FID of a set against itself, directional similarities on hand-built embeddings, CLIP score against torchmetrics'
CLIPScore, PSNR/SSIM on known cases (issue 16, point 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtu.evaluation.metrics import (PSNR_CAP, FeatureDistance, ScoringBatch, clip_directional, clip_image,
                                    clip_image_directional, clip_score, directional_similarity, frechet_distance,
                                    psnr, ssim)
from mtu.evaluation.networks import ClipEmbedder, Float64Features, TinyFeatures
from mtu.evaluation.weights import _tiny_clip

scipy_linalg = pytest.importorskip("scipy.linalg")


def exact_features(mean: np.ndarray, variances: np.ndarray, count: int, seed: int) -> torch.Tensor:
    """`count` vectors whose sample mean is `mean` and whose sample covariance (n - 1) is diag(`variances`)."""
    draws = np.random.default_rng(seed).standard_normal((count, mean.size))
    draws -= draws.mean(axis=0)
    whitening = np.linalg.inv(np.linalg.cholesky(np.cov(draws, rowvar=False)).T)
    return torch.from_numpy(draws @ whitening * np.sqrt(variances) + mean)


def scipy_frechet(first: np.ndarray, second: np.ndarray) -> float:
    """The Fréchet distance of two Gaussians fitted to feature sets, with scipy's matrix square root."""
    mean_1, mean_2 = first.mean(axis=0), second.mean(axis=0)
    cov_1, cov_2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root = scipy_linalg.sqrtm(cov_1 @ cov_2).real
    return float(((mean_1 - mean_2) ** 2).sum() + np.trace(cov_1 + cov_2 - 2 * root))


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    # For diagonal covariances FD = |mu_1 - mu_2|^2 + sum (sqrt(s_1) - sqrt(s_2))^2.
    mean_1, mean_2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, -0.5])
    var_1, var_2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    expected = ((mean_1 - mean_2) ** 2).sum() + ((np.sqrt(var_1) - np.sqrt(var_2)) ** 2).sum()
    value = frechet_distance(exact_features(mean_1, var_1, 50, 0), exact_features(mean_2, var_2, 70, 1))
    assert value == pytest.approx(expected, rel=1e-9, abs=0)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    rng = np.random.default_rng(3)
    mixing = rng.standard_normal((6, 6))
    first = rng.standard_normal((200, 6)) @ mixing
    second = rng.standard_normal((150, 6)) @ mixing.T + 0.3
    value = frechet_distance(torch.from_numpy(first), torch.from_numpy(second))
    assert value == pytest.approx(scipy_frechet(first, second), rel=1e-8, abs=0)


def test_fid_of_float32_features_is_computed_in_float64():
    torch.manual_seed(0)
    extractor = TinyFeatures(8).eval()
    real = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    fake = torch.randint(0, 200, (30, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    fid = FeatureDistance("fid", {"inception": Float64Features(extractor, 8)}, 30)
    fid.update(ScoringBatch(fake, targets=real))
    with torch.no_grad():  # the network's float32 features, then everything in float64 with scipy
        expected = scipy_frechet(extractor(real).double().numpy(), extractor(fake).double().numpy())
    assert fid.compute()["value"] == pytest.approx(expected, rel=1e-9, abs=0)


def test_fid_of_a_set_against_itself_is_zero():
    torch.manual_seed(0)
    features = Float64Features(TinyFeatures(8).eval(), 8)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    fid = FeatureDistance("fid", {"inception": features}, 24)
    fid.update(ScoringBatch(images, targets=images))
    assert abs(fid.compute()["value"]) < 1e-8
    other = FeatureDistance("fid", {"inception": features}, 24)
    other.update(ScoringBatch(torch.flip(images, dims=[0]) // 2, targets=images))
    assert other.compute()["value"] > 1e-6  # the same code path does see a different set


class TableEmbedder:
    """Hand-built unit embeddings: a text's or an image's vector looked up by its string / its first pixel."""

    def __init__(self, texts: dict, images: dict):
        self.text_table, self.image_table = texts, images

    def texts(self, texts):
        return torch.stack([self._unit(self.text_table[text]) for text in texts])

    def images(self, images):
        return torch.stack([self._unit(self.image_table[int(image[0, 0, 0])]) for image in images])

    @staticmethod
    def _unit(vector):
        vector = torch.tensor(vector, dtype=torch.float64)
        return vector / vector.norm()


def test_directional_similarities_on_hand_built_embeddings():
    e1, e2, e3 = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    embedder = TableEmbedder({"before": e1, "after": e2}, {10: e1, 20: e3, 30: e2})

    def image(code):
        return torch.full((3, 4, 4), code, dtype=torch.uint8)

    batch = ScoringBatch(outputs=torch.stack([image(20), image(30), image(10)]),
                         targets=torch.stack([image(30)] * 3), inputs=torch.stack([image(10)] * 3),
                         input_captions=["before"] * 3, output_captions=["after"] * 3,
                         networks={"clip": embedder})
    # T_out - T_in = (-1, 1, 0); I_out - I_in = (-1, 0, 1), (-1, 1, 0), 0: cosines 1/2, 1 and 0 (the convention)
    assert clip_directional(batch).tolist() == pytest.approx([0.5, 1.0, 0.0])
    # I_gt - I_in = (-1, 1, 0): the same cosines for the image-image direction
    assert clip_image_directional(batch).tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert clip_image(batch).tolist() == pytest.approx([0.0, 0.0, 1.0])  # cos(I_out, I_in)
    swapped = directional_similarity(embedder.texts(["after"]), embedder.texts(["before"]),
                                     embedder.images([image(10)]), embedder.images([image(20)]))
    assert swapped.item() == pytest.approx(-0.5)  # the order of the differences matters


class TensorFeatures(torch.nn.Module):
    """A CLIPModel whose get_*_features return tensors (transformers < 5), as torchmetrics' CLIPScore reads them."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs):
        return ClipEmbedder._features(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return ClipEmbedder._features(self.model.get_text_features(*args, **kwargs))


def test_clip_score_matches_torchmetrics_clipscore():
    from torchmetrics.multimodal import CLIPScore

    model, processor = _tiny_clip(seed=0)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    prompts = ["a red square", "two blue circles", "a green triangle on white", "a square", "nothing at all"]
    batch = ScoringBatch(images, prompts=prompts, networks={"clip": ClipEmbedder(model, processor)})
    raw = 100 * (batch.image_embeddings("outputs") * batch.text_embeddings("prompts")).sum(-1)
    reference = CLIPScore(model_name_or_path=lambda: (TensorFeatures(model), processor))
    reference.update(list(images), prompts)
    # torchmetrics clamps the mean at 0; ours clamps each example (Hessel et al.), the same where all are >= 0
    assert max(raw.mean().item(), 0.0) == pytest.approx(reference.compute().item(), abs=1e-4)
    assert clip_score(batch).tolist() == pytest.approx(raw.clamp(min=0).tolist())


def test_psnr_and_ssim_on_known_cases():
    target = torch.randint(20, 230, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    shifted = ScoringBatch(target + 10, targets=target)  # MSE = (10 / 255)^2 everywhere
    assert psnr(shifted).tolist() == pytest.approx([20 * np.log10(255 / 10)] * 2, rel=1e-6)
    same = ScoringBatch(target.clone(), targets=target)
    assert psnr(same).tolist() == [PSNR_CAP, PSNR_CAP]  # identical: capped, never inf
    assert ssim(same).tolist() == pytest.approx([1.0, 1.0])
    assert (ssim(shifted) < 1).all()
