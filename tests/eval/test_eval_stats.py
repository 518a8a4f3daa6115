"""The report's statistics against examples computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math
import random

import pytest

from qmcp.eval import EXACT_BELOW, McNemar, mcnemar, paired_bootstrap, percentile, wilson_interval


def _pairs(only_a: int, only_b: int, both: int = 0, neither: int = 0) -> tuple[list[bool], list[bool]]:
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return a, b


def test_wilson_for_8_of_10():
    # z = 1.959964 (95 %), z^2 = 3.841459; p = 0.8, n = 10
    # denominator = 1 + z^2/n = 1.3841459
    # centre = (p + z^2/2n) / denominator = (0.8 + 0.1920729) / 1.3841459 = 0.716741
    # half = z/denominator * sqrt(p(1-p)/n + z^2/4n^2) = 1.416011 * sqrt(0.016 + 0.0096036) = 1.416011 * 0.160011 = 0.226578
    # interval = (0.716741 - 0.226578, 0.716741 + 0.226578) = (0.490163, 0.943319)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.490163, abs=1e-5)
    assert high == pytest.approx(0.943319, abs=1e-5)


def test_wilson_stays_inside_0_and_1_at_the_edges():
    # 0/10: centre = 0.1920729 / 1.3841459 = 0.138767, half = 1.416011 * sqrt(0.0096036) = 0.138767
    # so (0, 0.277534): the normal approximation would give (0, 0), claiming certainty from 10 samples.
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.277534, abs=1e-5)
    low, high = wilson_interval(10, 10)  # the mirror image
    assert low == pytest.approx(1 - 0.277534, abs=1e-5) and high == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)  # nothing measured, nothing known


def test_wilson_at_another_confidence():
    # 99 %: z = 2.575829, z^2 = 6.634897; 50 of 100: p = 0.5, denominator = 1.066349
    # centre = (0.5 + 0.033174) / 1.066349 = 0.5 (symmetric)
    # half = 2.575829/1.066349 * sqrt(0.0025 + 0.000165872) = 2.415559 * 0.051632 = 0.124720
    low, high = wilson_interval(50, 100, confidence=0.99)
    assert low == pytest.approx(0.5 - 0.124720, abs=1e-5) and high == pytest.approx(0.5 + 0.124720, abs=1e-5)


@pytest.mark.parametrize(
    ("successes", "n", "confidence"),
    [(11, 10, 0.95), (-1, 10, 0.95), (1, -1, 0.95), (1, 10, 1.0), (1, 10, 0)],
)
def test_wilson_refuses_what_is_not_a_proportion(successes, n, confidence):
    with pytest.raises(ValueError):
        wilson_interval(successes, n, confidence)


def test_mcnemar_exact_for_1_against_6():
    # Discordant n = 7 < 25: exact. Under H0 each is A's with p = 1/2.
    # P(X <= 1) = (C(7,0) + C(7,1)) / 2^7 = (1 + 7) / 128 = 0.0625; two-sided: 2 * 0.0625 = 0.125
    a, b = _pairs(only_a=1, only_b=6, both=20, neither=3)  # concordant samples do not count
    assert mcnemar(a, b) == McNemar(only_a=1, only_b=6, p_value=0.125, method="exact")


def test_mcnemar_exact_is_at_most_1():
    # 3 against 3: P(X <= 3) = (1 + 6 + 15 + 20) / 64 = 0.65625; doubled 1.3125, so 1.
    assert mcnemar(*_pairs(3, 3)).p_value == 1.0
    assert mcnemar(*_pairs(0, 0, both=5)) == McNemar(0, 0, 1.0, "exact")  # no disagreement at all


def test_mcnemar_chi_square_for_10_against_25():
    # Discordant n = 35 >= 25: chi-square with continuity correction.
    # statistic = (|10 - 25| - 1)^2 / 35 = 196 / 35 = 5.6
    # p = P(chi2(1) > 5.6) = erfc(sqrt(5.6 / 2)) = erfc(1.673320) = 0.017960 (tables: 0.0180)
    result = mcnemar(*_pairs(10, 25, both=40))
    assert (result.only_a, result.only_b, result.method) == (10, 25, "chi-square")
    assert result.p_value == pytest.approx(0.017960, abs=1e-5)


def test_mcnemar_switches_method_at_25_discordant():
    assert EXACT_BELOW == 25
    # 24 discordant, 0 against 24: exact 2 * 1/2^24 = 1.1921e-7
    exact = mcnemar(*_pairs(0, 24))
    assert exact.method == "exact" and exact.p_value == pytest.approx(2 / 2**24)
    # 25 discordant, 0 against 25: statistic = (25 - 1)^2 / 25 = 23.04, p = erfc(sqrt(11.52)) = erfc(3.394113) = 1.5867e-6
    chi = mcnemar(*_pairs(0, 25))
    assert chi.method == "chi-square" and chi.p_value == pytest.approx(math.erfc(math.sqrt(11.52)))
    assert chi.p_value == pytest.approx(1.5867e-6, rel=1e-3)


def test_mcnemar_refuses_unpaired_results():
    with pytest.raises(ValueError, match="differ in length: 2 and 1"):
        mcnemar([True, False], [True])


def test_paired_bootstrap_of_a_constant_difference_is_that_difference():
    # Every pair differs by exactly 0.5 (binary fractions: no rounding), so every resample's mean is 0.5.
    assert paired_bootstrap([1.5, 0.75, 2.0], [1.0, 0.25, 1.5]) == (0.5, 0.5, 0.5)


def test_paired_bootstrap_with_a_known_mean_difference():
    # differences (1, 1, 1, 0): mean 0.75. A resample's mean is k/4, k ~ Binomial(4, 3/4):
    # P(0) = 0.25^4 = 0.0039, P(1/4) = 4 * 0.75 * 0.25^3 = 0.0469, so P(<= 1/4) = 0.0508 > 0.025 > 0.0039:
    # the 2.5th percentile is 0.25. P(1) = 0.75^4 = 0.316 > 0.025: the 97.5th percentile is 1.0.
    mean, low, high = paired_bootstrap([1, 1, 1, 0], [0, 0, 0, 0])
    assert (mean, low, high) == (0.75, 0.25, 1.0)


def test_paired_bootstrap_is_deterministic_by_seed():
    rng = random.Random(42)
    a = [float(rng.random() < 0.7) for _ in range(200)]
    b = [float(rng.random() < 0.6) for _ in range(200)]
    first = paired_bootstrap(a, b, seed=3)
    assert paired_bootstrap(a, b, seed=3) == first
    other = paired_bootstrap(a, b, seed=4)
    assert other[0] == first[0] and other[1:] != first[1:]  # the same mean, another resampling
    mean, low, high = first
    assert mean == pytest.approx((sum(a) - sum(b)) / 200)
    assert low < mean < high
    # The standard error of the mean difference is about sqrt(var(d)/n); the 95 % interval spans ~ 2 x 1.96 of it.
    d = [x - y for x, y in zip(a, b, strict=True)]
    m = sum(d) / len(d)
    se = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    narrower = paired_bootstrap(a, b, seed=3, confidence=0.5)
    assert low < narrower[1] < narrower[2] < high


def test_paired_bootstrap_refuses_what_it_cannot_compare():
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="no paired results"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="iterations"):
        paired_bootstrap([1.0], [0.0], iterations=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1.0], [0.0], confidence=95)


def test_percentile_interpolates_linearly():
    values = [4.0, 1.0, 3.0, 2.0]  # sorted: 1, 2, 3, 4
    assert percentile(values, 50) == 2.5  # position 3 * 0.5 = 1.5: halfway between 2 and 3
    assert percentile(values, 95) == pytest.approx(3.85)  # position 2.85: 3 + 0.85 * (4 - 3)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([10, 20, 30, 40, 50], 25) == 20.0  # position 1 exactly


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_nonsense(values, q):
    with pytest.raises(ValueError):
        percentile(values, q)
