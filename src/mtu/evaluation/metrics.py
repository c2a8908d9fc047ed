"""The metrics of `mtu eval` (Sec. 6 "Metrics"), by name: what a task's plug-in lists in `Task.metrics`.

    t2i      fid, kid (torchmetrics, Inception pool3 features), clip_score
    edit     clip_directional: cos(T_out - T_in, I_out - I_in) (InstructPix2Pix), clip_image: cos(I_out, I_in)
    inpaint  clip_image_directional: cos(I_gt - I_in, I_out - I_in), lpips_inside / lpips_outside the mask
    sr       lpips (AlexNet), psnr, ssim (torchmetrics)

CLIP embeddings are L2-normalised before any difference is taken, as InstructPix2Pix's `ClipSimilarity` does; a
zero difference (an output equal to its input) has cosine 0 (`F.cosine_similarity`'s eps). Every metric reads the
8-bit images as written to disk. Per-example metrics are means with bootstrap intervals (`mtu.stats`); FID and KID
are set-level numbers. A plug-in adds its own metric with `register_metric`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import InputError
from ..registry import Registry
from ..stats import summarize_mean
from .networks import uint8_to_signed

PSNR_CAP = 100.0  # dB, as `mtu.toyworld.metrics.PSNR_CAP`: identical images have infinite PSNR
ROLES = ("targets", "inputs", "prompts", "captions", "masks")  # what a metric may need beside the outputs


@dataclass
class ScoringBatch:
    """A batch of generated images with what the metrics compare them to; CLIP embeddings are computed once.

    Args:
        outputs: Generated images, uint8 (N, 3, H, W).
        targets: The reference images (ground truth), uint8 (N, 3, H, W), or None.
        inputs: The input images (the condition), uint8 (N, 3, h, w), or None.
        prompts: The prompts (instructions for edit and inpaint), or None.
        input_captions, output_captions: Captions of the input and of the wanted output, or None.
        masks: Where the edit should act, bool (N, 1, H, W), or None.
        networks: {"clip": ClipEmbedder, "inception": Float64Features, "alexnet": LPIPS} as loaded.
    """

    outputs: torch.Tensor
    targets: torch.Tensor | None = None
    inputs: torch.Tensor | None = None
    prompts: list[str] | None = None
    input_captions: list[str] | None = None
    output_captions: list[str] | None = None
    masks: torch.Tensor | None = None
    networks: dict = field(default_factory=dict)
    _embeddings: dict = field(default_factory=dict, repr=False)

    def has(self, role: str) -> bool:
        if role == "captions":
            return self.input_captions is not None and self.output_captions is not None
        return getattr(self, role) is not None

    def image_embeddings(self, role: str) -> torch.Tensor:
        """CLIP embeddings (N, D) of `outputs`, `targets` or `inputs`."""
        if role not in self._embeddings:
            self._embeddings[role] = self.networks["clip"].images(getattr(self, role))
        return self._embeddings[role]

    def text_embeddings(self, role: str) -> torch.Tensor:
        """CLIP embeddings (N, D) of `prompts`, `input_captions` or `output_captions`."""
        if role not in self._embeddings:
            self._embeddings[role] = self.networks["clip"].texts(getattr(self, role))
        return self._embeddings[role]


def directional_similarity(source_from: torch.Tensor, source_to: torch.Tensor, other_from: torch.Tensor,
                           other_to: torch.Tensor) -> torch.Tensor:
    """cos(source_to - source_from, other_to - other_from) per row, of unit embeddings (N, D) -> (N,)."""
    return F.cosine_similarity(source_to - source_from, other_to - other_from, dim=-1, eps=1e-8)


# ---- per-example metrics: (batch) -> (N,) values ----

def clip_score(batch: ScoringBatch) -> torch.Tensor:
    """max(100 cos(E_I, E_T), 0) per example (Hessel et al., 2021, with torchmetrics' weight 100)."""
    cosine = (batch.image_embeddings("outputs") * batch.text_embeddings("prompts")).sum(-1)
    return torch.clamp(100 * cosine, min=0)


def clip_directional(batch: ScoringBatch) -> torch.Tensor:
    return directional_similarity(batch.text_embeddings("input_captions"), batch.text_embeddings("output_captions"),
                                  batch.image_embeddings("inputs"), batch.image_embeddings("outputs"))


def clip_image(batch: ScoringBatch) -> torch.Tensor:
    return (batch.image_embeddings("outputs") * batch.image_embeddings("inputs")).sum(-1)


def clip_image_directional(batch: ScoringBatch) -> torch.Tensor:
    inputs = batch.image_embeddings("inputs")
    return directional_similarity(inputs, batch.image_embeddings("targets"), inputs, batch.image_embeddings("outputs"))


def _check_same_size(batch: ScoringBatch) -> None:
    if batch.outputs.shape != batch.targets.shape:
        raise ValueError(f"outputs {tuple(batch.outputs.shape)} and targets {tuple(batch.targets.shape)} differ in "
                         f"size; generate at the targets' size.")


def lpips(batch: ScoringBatch) -> torch.Tensor:
    _check_same_size(batch)
    return batch.networks["alexnet"](uint8_to_signed(batch.outputs), uint8_to_signed(batch.targets))


def _lpips_region(batch: ScoringBatch, inside: bool) -> torch.Tensor:
    """Mean of LPIPS' spatial map over the mask (or outside it); NaN where that region is empty."""
    _check_same_size(batch)
    distance_map = batch.networks["alexnet"](uint8_to_signed(batch.outputs), uint8_to_signed(batch.targets),
                                             spatial=True)  # (N, 1, H, W)
    region = (batch.masks if inside else ~batch.masks).to(distance_map.dtype)
    area = region.sum(dim=(1, 2, 3))
    return (distance_map * region).sum(dim=(1, 2, 3)) / area.where(area > 0, torch.nan)


def psnr(batch: ScoringBatch) -> torch.Tensor:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_same_size(batch)
    values = peak_signal_noise_ratio(batch.outputs.double() / 255, batch.targets.double() / 255, data_range=1.0,
                                     reduction="none", dim=(1, 2, 3))
    return torch.clamp(values, max=PSNR_CAP)


def ssim(batch: ScoringBatch) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_same_size(batch)
    return structural_similarity_index_measure(batch.outputs.double() / 255, batch.targets.double() / 255,
                                               data_range=1.0, reduction="none")


# ---- accumulators: update(batch) per batch, compute() -> {"value", ...} ----

class PerExample:
    """Collects a per-example metric; its mean with a bootstrap interval. Non-finite values (an empty mask
    region) are left out and counted."""

    def __init__(self, function: Callable, seed: int):
        self.function, self.seed, self.values = function, seed, []

    def update(self, batch: ScoringBatch) -> None:
        self.values.append(self.function(batch).double().cpu().numpy())

    def compute(self) -> dict:
        values = np.concatenate(self.values)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return {"value": None, "count": 0, "excluded": int(values.size)}
        return {**summarize_mean(finite, seed=self.seed), "excluded": int(values.size - finite.size)}


def frechet_metric(features):
    """torchmetrics' FrechetInceptionDistance on `features` (a `Float64Features`): statistics and result in
    float64, the Fréchet distance ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) of the two sets."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=features, reset_real_features=False)


def frechet_distance(real_features: torch.Tensor, fake_features: torch.Tensor) -> float:
    """The Fréchet distance of two sets of feature vectors (N, d), computed as FID computes it from features."""
    from torch import nn

    from .networks import Float64Features

    metric = frechet_metric(Float64Features(nn.Identity(), real_features.shape[1]))
    metric.update(real_features, real=True)
    metric.update(fake_features, real=False)
    return float(metric.compute())


class FeatureDistance:
    """FID or KID between the targets' and the outputs' features (torchmetrics, float64 statistics)."""

    def __init__(self, kind: str, networks: dict, count: int):
        from torchmetrics.image.kid import KernelInceptionDistance

        features = networks["inception"]
        if kind == "fid":
            self.metric = frechet_metric(features)
        else:  # subsets of at most 1000 (torchmetrics' default), as many as the sample allows
            with warnings.catch_warnings():  # that it keeps every feature in memory: known, and said in the docs
                warnings.simplefilter("ignore", UserWarning)
                self.metric = KernelInceptionDistance(feature=features, subset_size=min(1000, count), subsets=100,
                                                      reset_real_features=False)
        self.metric.to(next(features.parameters()).device)
        self.kind = kind

    def update(self, batch: ScoringBatch) -> None:
        self.metric.update(batch.targets, real=True)
        self.metric.update(batch.outputs, real=False)

    def compute(self) -> dict:
        count = int(self.metric.fake_features_num_samples) if self.kind == "fid" else \
            sum(len(part) for part in self.metric.fake_features)
        if self.kind == "fid":
            return {"value": float(self.metric.compute()), "count": count}
        mean, std = self.metric.compute()
        return {"value": float(mean), "std": float(std), "count": count}


# ---- the registry ----

@dataclass(frozen=True)
class Metric:
    """One metric of `mtu eval`.

    Args:
        name: Its key in results and in `Task.metrics`.
        label: Its column in the table.
        protocol: How it is computed: implementation, weights, resize and quantisation (goes into the results).
        networks: The metric networks it runs ("clip", "inception", "alexnet"; `mtu.evaluation.weights`).
        needs: What it compares the outputs with (`ROLES`); examples without it are not scored with it.
        per_example: `(batch) -> (N,) tensor` for a per-example metric (then reported with an interval).
        accumulator: `(networks, count, seed) -> object with update(batch) and compute()` for a set-level one.
        higher_is_better: Its direction, for the table's arrows.
        min_features_factor: A set-level metric on features of width d needs at least d + 1 samples (a
            non-singular covariance): FID; 0 for none.
        random_name, random_label: Its key and column when run on random networks (never the metric's name).
    """

    name: str
    label: str
    protocol: str
    networks: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    per_example: Callable | None = None
    accumulator: Callable | None = None
    higher_is_better: bool = True
    min_features_factor: int = 0
    random_name: str = ""
    random_label: str = ""

    def __post_init__(self):
        if (self.per_example is None) == (self.accumulator is None):
            raise InputError(f"metric {self.name!r} needs exactly one of `per_example` and `accumulator`.")
        unknown = [role for role in self.needs if role not in ROLES]
        if unknown:
            raise InputError(f"`needs` of metric {self.name!r} has {unknown}; supported: {ROLES}.")
        object.__setattr__(self, "random_name", self.random_name or f"{self.name}_random_net")
        object.__setattr__(self, "random_label", self.random_label or f"{self.label} (random net)")

    def make(self, networks: dict, count: int, seed: int):
        if self.per_example is not None:
            return PerExample(self.per_example, seed)
        return self.accumulator(networks, count, seed)


METRIC_REGISTRY = Registry("metric", "mtu.eval_metrics", add_loaded=lambda metric: register_metric(metric))


def register_metric(metric: Metric, overwrite: bool = False) -> Metric:
    """Makes `metric` a name a task's `metrics` may list."""
    if not isinstance(metric, Metric):
        raise InputError(f"`metric` must be an mtu.evaluation.Metric, got {type(metric).__name__}.")
    METRIC_REGISTRY.put(metric.name, metric, overwrite=overwrite)
    return metric


def get_metric(name: str) -> Metric:
    metric = METRIC_REGISTRY.get(name)
    if metric is None:
        raise InputError(f"unknown metric {name!r}; registered: {', '.join(METRIC_REGISTRY.names())} (a plug-in adds "
                         f"one with mtu.evaluation.register_metric).")
    return metric


CLIP_PROTOCOL = ("transformers CLIPModel, ViT-L/14 (openai/clip-vit-large-patch14); CLIPProcessor preprocessing "
                 "(shortest side resized bicubically to 224, centre crop, CLIP mean/std) of the 8-bit images; "
                 "embeddings L2-normalised, float64 cosines")
LPIPS_PROTOCOL = ("LPIPS v0.1 (Zhang et al. 2018) on torchvision's ImageNet AlexNet with the linear heads "
                  "torchmetrics ships; torchmetrics' formula and input scaling ([-1, 1], no resize), mtu's own "
                  "backbone module (no torchvision); 8-bit images")
_BUILTIN = (
    Metric("fid", "FID", "torchmetrics FrechetInceptionDistance, float64 statistics; torch-fidelity's TF FID "
           "Inception-v3 pool3 (2048-d), uint8 in, bilinear resize to 299x299 TF-1.x-compatible (antialias off); "
           "reference = the data's target images", ("inception",), ("targets",),
           accumulator=lambda networks, count, seed: FeatureDistance("fid", networks, count),
           higher_is_better=False, min_features_factor=1, random_name="fd_random_net",
           random_label="FD (random net)"),
    Metric("kid", "KID", "torchmetrics KernelInceptionDistance (polynomial kernel, 100 subsets of min(1000, n)), "
           "same Inception features as FID; mean and std over subsets", ("inception",), ("targets",),
           accumulator=lambda networks, count, seed: FeatureDistance("kid", networks, count),
           higher_is_better=False, random_name="kd_random_net", random_label="KD (random net)"),
    Metric("clip_score", "CLIP score", f"max(100 cos(E_image, E_prompt), 0) per example; {CLIP_PROTOCOL}",
           ("clip",), ("prompts",), per_example=clip_score),
    Metric("clip_directional", "CLIP dir.", "InstructPix2Pix's directional similarity cos(T_out - T_in, I_out - "
           f"I_in) from the input and output captions; {CLIP_PROTOCOL}", ("clip",), ("inputs", "captions"),
           per_example=clip_directional),
    Metric("clip_image", "CLIP img.", f"cos(I_out, I_in), CLIP image similarity to the input; {CLIP_PROTOCOL}",
           ("clip",), ("inputs",), per_example=clip_image),
    Metric("clip_image_directional", "CLIP img. dir.", "cos(I_gt - I_in, I_out - I_in) of CLIP image embeddings; "
           f"{CLIP_PROTOCOL}", ("clip",), ("inputs", "targets"), per_example=clip_image_directional),
    Metric("lpips", "LPIPS", f"LPIPS(output, target); {LPIPS_PROTOCOL}", ("alexnet",), ("targets",),
           per_example=lpips, higher_is_better=False),
    Metric("lpips_inside", "LPIPS in", f"LPIPS' spatial map (each layer upsampled bilinearly to the image) averaged "
           f"inside the mask; {LPIPS_PROTOCOL}", ("alexnet",), ("targets", "masks"),
           per_example=lambda batch: _lpips_region(batch, inside=True), higher_is_better=False),
    Metric("lpips_outside", "LPIPS out", f"LPIPS' spatial map averaged outside the mask; {LPIPS_PROTOCOL}",
           ("alexnet",), ("targets", "masks"), per_example=lambda batch: _lpips_region(batch, inside=False),
           higher_is_better=False),
    Metric("psnr", "PSNR", f"torchmetrics peak_signal_noise_ratio per image, data range 1, float64, of the 8-bit "
           f"images; capped at {PSNR_CAP:g} dB", (), ("targets",), per_example=psnr),
    Metric("ssim", "SSIM", "torchmetrics structural_similarity_index_measure per image (Gaussian 11x11, sigma 1.5, "
           "K = 0.01, 0.03, RGB channels averaged), data range 1, float64, of the 8-bit images", (), ("targets",),
           per_example=ssim),
)
for _metric in _BUILTIN:
    register_metric(_metric)
