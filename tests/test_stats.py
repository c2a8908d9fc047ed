"""Confidence intervals and paired comparisons: known published values, coverage-like sanity, and refusals."""

import numpy as np
import pytest

from mtu.stats import (bootstrap_interval, crossed_bootstrap_interval, mcnemar_p_value, paired_difference,
                       summarize_mean, summarize_rate, wilson_interval)


@pytest.mark.parametrize("successes, total, expected", [
    (0, 10, (0.0, 0.2775)),
    (5, 10, (0.2366, 0.7634)),
    (81, 263, (0.2553, 0.3662)),
    (10, 10, (0.7225, 1.0)),
])
def test_wilson_matches_published_values(successes, total, expected):
    low, high = wilson_interval(successes, total)
    assert low == pytest.approx(expected[0], abs=1e-3)
    assert high == pytest.approx(expected[1], abs=1e-3)


def test_wilson_is_exact_at_the_ends_and_narrows_with_confidence():
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0
    low_99, high_99 = wilson_interval(30, 100, confidence=0.99)
    low_90, high_90 = wilson_interval(30, 100, confidence=0.90)
    assert low_99 < low_90 < 0.3 < high_90 < high_99


@pytest.mark.parametrize("kwargs, name", [
    ({"successes": 11, "total": 10}, "successes"),
    ({"successes": -1, "total": 10}, "successes"),
    ({"successes": 0, "total": 0}, "total"),
    ({"successes": 1.5, "total": 10}, "successes"),
    ({"successes": True, "total": 10}, "successes"),
    ({"successes": 1, "total": 10, "confidence": 1.0}, "confidence"),
    ({"successes": 1, "total": 10, "confidence": 95}, "confidence"),
])
def test_wilson_refuses_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        wilson_interval(**kwargs)


def test_bootstrap_of_a_constant_is_that_constant():
    low, high = bootstrap_interval(np.full(50, 0.3))
    assert low == pytest.approx(0.3, abs=1e-12) and high == pytest.approx(0.3, abs=1e-12)


def test_bootstrap_of_normal_samples_has_the_textbook_width():
    values = np.random.default_rng(0).normal(size=400)
    low, high = bootstrap_interval(values)
    assert low < 0 < high
    assert (high - low) == pytest.approx(2 * 1.96 / 20, rel=0.25)  # 2 z sigma / sqrt(n)
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    median_low, median_high = bootstrap_interval(values, statistic=np.median)
    assert median_low < np.median(values) < median_high


def test_bootstrap_of_a_long_input_is_resampled_in_blocks():
    # 5000 values x 500 resamples exceeds one block of resamples: the blocks must still make one interval.
    values = np.random.default_rng(1).normal(loc=2.0, size=5000)
    low, high = bootstrap_interval(values, resamples=500)
    assert low < values.mean() < high and high - low < 0.2


@pytest.mark.parametrize("values, error", [
    ([], ValueError),
    ([[1.0, 2.0]], ValueError),
    ([1.0, float("inf")], ValueError),
    ([1.0, float("nan")], ValueError),
    (["a", "b"], TypeError),
])
def test_bootstrap_refuses_bad_values(values, error):
    with pytest.raises(error, match="`values`"):
        bootstrap_interval(values)


def test_bootstrap_refuses_bad_settings():
    with pytest.raises(ValueError, match="`resamples`"):
        bootstrap_interval([1.0, 2.0], resamples=0)
    with pytest.raises(ValueError, match="`confidence`"):
        bootstrap_interval([1.0, 2.0], confidence=0.0)
    with pytest.raises(ValueError, match="`seed`"):
        bootstrap_interval([1.0, 2.0], seed=-1)


def test_paired_difference_detects_a_real_shift_and_not_a_null_one():
    rng = np.random.default_rng(0)
    base = rng.normal(size=200)
    shifted = paired_difference(base + 0.3 + rng.normal(scale=0.5, size=200), base)
    assert shifted["significant"] and shifted["low"] > 0
    assert shifted["difference"] == pytest.approx(0.3, abs=0.1)
    assert "p_value" not in shifted  # floats: no McNemar test
    null = paired_difference(base + rng.normal(scale=0.5, size=200), base)
    assert not null["significant"] and null["low"] < 0 < null["high"]
    identical = paired_difference(base, base)
    assert not identical["significant"] and identical["difference"] == 0.0


def test_paired_difference_of_outcomes_counts_discordant_pairs():
    first = [False] * 6 + [True] * 4 + [False] * 5
    second = [True] * 6 + [True] * 4 + [False] * 5
    result = paired_difference(first, second)
    assert (result["first_only"], result["second_only"]) == (0, 6)
    assert result["p_value"] == pytest.approx(2 * 0.5 ** 6)  # 0.03125
    assert result["difference"] == pytest.approx(-6 / 15)
    assert result["significant"] and result["high"] < 0


def test_mcnemar_p_values_by_hand():
    assert mcnemar_p_value(0, 6) == pytest.approx(0.03125)
    assert mcnemar_p_value(9, 1) == pytest.approx(2 * (1 + 10) / 2 ** 10)
    assert mcnemar_p_value(3, 3) == 1.0  # capped: the two tails overlap
    assert mcnemar_p_value(0, 0) == 1.0
    assert mcnemar_p_value(0, 2000) < 1e-300  # large counts stay exact, no overflow


def test_paired_difference_refuses_unpaired_input():
    with pytest.raises(ValueError, match="`first` and `second`"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="`second`"):
        paired_difference([1.0, 2.0], [1.0, float("inf")])


def test_summaries():
    rate = summarize_rate([True, False, True, True])
    assert rate["value"] == 0.75 and rate["count"] == 4
    assert (rate["low"], rate["high"]) == wilson_interval(3, 4)
    assert summarize_rate(np.array([1, 0, 0, 0]))["value"] == 0.25
    mean = summarize_mean([1.0, 2.0, 3.0, 4.0])
    assert mean["value"] == 2.5 and mean["count"] == 4 and mean["low"] < 2.5 < mean["high"]


def test_summaries_refuse_bad_input():
    with pytest.raises(ValueError, match="`values`"):
        summarize_mean([30.0, float("inf")])  # identical images: the caller must cap the PSNR
    with pytest.raises(ValueError, match="`outcomes`"):
        summarize_rate([0.5, 1.0])
    with pytest.raises(ValueError, match="`outcomes`"):
        summarize_rate([])


def test_crossed_bootstrap_widens_with_the_spread_between_seeds():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, size=(3, 400))
    # no seed effect: the per-example noise is counted twice (in the seed-means and in the examples), so the
    # interval is wider than the examples-only bootstrap of the seed-means by about sqrt(2), never narrower
    low, high = crossed_bootstrap_interval(noise)
    example_low, example_high = bootstrap_interval(noise.mean(axis=0))
    assert low < 0 < high
    assert 1.1 < (high - low) / (example_high - example_low) < 1.6
    # a seed effect of +-1 around +0.3: the examples-only interval excludes 0, the crossed one must not
    shifted = noise / 4 + 0.3 + np.array([[-1.0], [0.0], [1.0]])
    assert bootstrap_interval(shifted.mean(axis=0))[0] > 0
    low, high = crossed_bootstrap_interval(shifted)
    assert low < 0 < high and high - low > 1.0
    # the same shift in every seed stays significant
    low, high = crossed_bootstrap_interval(noise / 4 + 0.3)
    assert 0.2 < low < 0.3 < high < 0.4
    assert crossed_bootstrap_interval(noise, seed=5) == crossed_bootstrap_interval(noise, seed=5)


def test_crossed_bootstrap_of_a_constant_and_bad_tables():
    assert crossed_bootstrap_interval(np.full((2, 5), 0.25)) == pytest.approx((0.25, 0.25))
    for bad in (np.zeros(5), np.zeros((1, 5)), np.zeros((3, 0))):
        with pytest.raises(ValueError, match="`values`"):
            crossed_bootstrap_interval(bad)
    with pytest.raises(ValueError, match="finite"):
        crossed_bootstrap_interval(np.array([[0.0, np.inf], [1.0, 2.0]]))
