"""Confidence intervals for evaluation results, so a reported difference can be told apart from noise (issue 11).

Rates (a fraction of examples that succeed) get the Wilson score interval, which stays inside [0, 1] and keeps a
sensible width at 0 or n successes, unlike the normal approximation. Means of per-example scores get a
percentile bootstrap. Two systems measured on the same examples are compared by a paired bootstrap of the
per-example difference and, for pass/fail outcomes, by McNemar's exact test on the discordant pairs. Two systems
each trained with several seeds and scored on the same examples are compared by a bootstrap that resamples seeds
and examples at once, so that the interval also holds how far the difference moves from one training run to the
next.

Everything here is generic: no toy-world imports, numpy and the standard library only.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable

import numpy as np

# Bootstrap resamples are drawn in blocks of about this many values, which bounds memory for long arrays.
_BLOCK_VALUES = 2_000_000


def _check_confidence(confidence) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be a number in (0, 1), got {confidence!r}.")
    return float(confidence)


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _as_values(name: str, values) -> np.ndarray:
    """`values` as a non-empty 1-D float array with only finite entries (bools become 0.0/1.0)."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence, got shape {array.shape}.")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold bools or numbers, got dtype {array.dtype}.")
    array = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        # Refused here rather than averaged into inf or nan: e.g. the PSNR of identical images must be capped
        # by the caller.
        raise ValueError(f"`{name}` must be finite, got {array[bad[0]]} at index {bad[0]} "
                         f"({bad.size} non-finite values).")
    return array


def _as_outcomes(name: str, outcomes) -> np.ndarray:
    """`outcomes` as a non-empty 1-D bool array; only bools (or the integers 0 and 1) are accepted."""
    array = np.asarray(outcomes)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence, got shape {array.shape}.")
    if array.dtype != bool and not (array.dtype.kind in "iu" and np.isin(array, (0, 1)).all()):
        raise ValueError(f"`{name}` must hold bools (or 0/1), got dtype {array.dtype} with values like "
                         f"{array[:3].tolist()}.")
    return array.astype(bool)


def _normal_quantile(confidence: float) -> float:
    """z such that a standard normal lies within +-z with probability `confidence`."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson, 1927).

    Args:
        successes: Number of successes, 0 <= successes <= total.
        total: Number of trials, at least 1.
        confidence: Coverage of the interval, in (0, 1).

    Returns:
        (low, high), within [0, 1].
    """
    total = _check_count("total", total, 1)
    successes = _check_count("successes", successes, 0)
    if successes > total:
        raise ValueError(f"`successes` must be at most `total` ({total}), got {successes}.")
    z = _normal_quantile(_check_confidence(confidence))
    rate = successes / total
    denominator = 1 + z ** 2 / total
    centre = (rate + z ** 2 / (2 * total)) / denominator
    half_width = z * math.sqrt(rate * (1 - rate) / total + z ** 2 / (4 * total ** 2)) / denominator
    # At 0 (or n) successes the bound is exactly 0 (or 1); the formula gives it only up to rounding.
    low = 0.0 if successes == 0 else centre - half_width
    high = 1.0 if successes == total else centre + half_width
    return low, high


def _percentile_interval(estimates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` share of bootstrap `estimates`: (low, high) percentiles."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_interval(values, confidence: float = 0.95, resamples: int = 2000, seed: int = 0,
                       statistic: Callable = np.mean) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` of `values` (Efron & Tibshirani, 1993, Ch. 13).

    Args:
        values: Non-empty 1-D sequence of finite numbers (or bools).
        confidence: Coverage of the interval, in (0, 1).
        resamples: Number of bootstrap resamples, at least 1.
        seed: Seed of the resampling generator; the same seed gives the same interval.
        statistic: Function of an array taking `axis=` (np.mean, np.median, ...).

    Returns:
        (low, high).
    """
    array = _as_values("values", values)
    confidence = _check_confidence(confidence)
    resamples = _check_count("resamples", resamples, 1)
    rng = np.random.default_rng(_check_count("seed", seed, 0))
    block = max(1, _BLOCK_VALUES // array.size)
    estimates = []
    for begin in range(0, resamples, block):
        indices = rng.integers(0, array.size, size=(min(block, resamples - begin), array.size))
        estimates.append(np.asarray(statistic(array[indices], axis=1), dtype=np.float64))  # (block,)
    return _percentile_interval(np.concatenate(estimates), confidence)  # of (resamples,) estimates


def crossed_bootstrap_interval(values, confidence: float = 0.95, resamples: int = 2000,
                               seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the grand mean of a (seeds, examples) table, resampling both at once.

    Each resample draws seeds with replacement and, independently, examples with replacement, and averages the
    table's cells at those (seed, example) pairs: the two-way bootstrap of a crossed design (every seed is scored
    on every example; Owen, 2007, "The pigeonhole bootstrap"). The interval so holds both sources of spread, the
    examples drawn and the training run's seed, where `bootstrap_interval` of the seed-means holds only the first.
    It is conservative: the per-example noise enters twice (through the seed-means and through the examples), so
    with no seed effect at all it is wider than the examples-only interval (about 1.4 times on 3 seeds of 400
    normal examples, tests/test_stats.py). With few seeds (3) read it beside the per-seed values.

    Args:
        values: (seeds, examples) array of finite numbers (or bools), at least 2 seeds and 1 example.
        confidence: Coverage of the interval, in (0, 1).
        resamples: Number of bootstrap resamples, at least 1.
        seed: Seed of the resampling generator; the same seed gives the same interval.

    Returns:
        (low, high).
    """
    array = np.asarray(values)
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] == 0:
        raise ValueError(f"`values` must be a (seeds, examples) table with at least 2 seeds and 1 example, got "
                         f"shape {array.shape}.")
    flat = _as_values("values", array.reshape(-1)).reshape(array.shape)
    confidence = _check_confidence(confidence)
    resamples = _check_count("resamples", resamples, 1)
    rng = np.random.default_rng(_check_count("seed", seed, 0))
    seeds, examples = flat.shape
    block = max(1, _BLOCK_VALUES // flat.size)
    estimates = []
    for begin in range(0, resamples, block):
        count = min(block, resamples - begin)
        example_draws = rng.integers(0, examples, size=(count, examples))
        seed_means = flat[:, example_draws].mean(axis=2)  # (seeds, count): each seed's mean on the drawn examples
        seed_draws = rng.integers(0, seeds, size=(count, seeds))
        estimates.append(seed_means[seed_draws, np.arange(count)[:, None]].mean(axis=1))  # (count,)
    return _percentile_interval(np.concatenate(estimates), confidence)


def mcnemar_p_value(first_only: int, second_only: int) -> float:
    """Exact two-sided McNemar test: the binomial(n, 1/2) p-value of the discordant pairs' split.

    Args:
        first_only: Pairs where only the first system succeeded.
        second_only: Pairs where only the second system succeeded.
    """
    first_only = _check_count("first_only", first_only, 0)
    second_only = _check_count("second_only", second_only, 0)
    discordant = first_only + second_only
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(first_only, second_only) + 1))
    return min(1.0, 2 * tail / 2 ** discordant)  # exact integer arithmetic until the one division


def paired_difference(first, second, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict:
    """Compares two systems measured on the same examples: mean of first - second with a paired bootstrap interval.

    Args:
        first: Per-example outcomes (bools) or scores (finite numbers) of the first system.
        second: The second system's, on the same examples in the same order.
        confidence: Coverage of the interval, in (0, 1).
        resamples: Number of bootstrap resamples (examples are resampled as pairs).
        seed: Seed of the resampling generator.

    Returns:
        {"difference", "low", "high", "significant"} where "significant" means the interval excludes 0; for
        two bool inputs also "first_only", "second_only" (discordant pair counts) and "p_value" (exact McNemar).
    """
    first_array, second_array = _as_values("first", first), _as_values("second", second)
    if first_array.shape != second_array.shape:
        raise ValueError(f"`first` and `second` must have the same length (paired examples), got "
                         f"{first_array.size} and {second_array.size}.")
    differences = first_array - second_array
    low, high = bootstrap_interval(differences, confidence, resamples, seed)
    result = {"difference": float(differences.mean()), "low": low, "high": high,
              "significant": bool(low > 0 or high < 0)}
    if np.asarray(first).dtype == bool and np.asarray(second).dtype == bool:
        first_only, second_only = int((differences > 0).sum()), int((differences < 0).sum())
        result.update(first_only=first_only, second_only=second_only,
                      p_value=mcnemar_p_value(first_only, second_only))
    return result


def summarize_rate(outcomes, confidence: float = 0.95) -> dict:
    """{"value", "low", "high", "count"} of a success rate, with the Wilson interval.

    Args:
        outcomes: Non-empty 1-D sequence of bools (or 0/1), one per example.
        confidence: Coverage of the interval, in (0, 1).
    """
    array = _as_outcomes("outcomes", outcomes)
    successes = int(array.sum())
    low, high = wilson_interval(successes, array.size, confidence)
    return {"value": successes / array.size, "low": low, "high": high, "count": int(array.size)}


def summarize_mean(values, seed: int = 0, confidence: float = 0.95, resamples: int = 2000) -> dict:
    """{"value", "low", "high", "count"} of a mean score, with the percentile bootstrap interval.

    Args:
        values: Non-empty 1-D sequence of finite numbers; cap infinite scores (the PSNR of identical images)
            before calling.
        seed: Seed of the resampling generator.
        confidence: Coverage of the interval, in (0, 1).
        resamples: Number of bootstrap resamples.
    """
    array = _as_values("values", values)
    low, high = bootstrap_interval(array, confidence, resamples, seed)
    return {"value": float(array.mean()), "low": low, "high": high, "count": int(array.size)}
