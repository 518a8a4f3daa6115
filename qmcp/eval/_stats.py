"""The statistics of an evaluation's report, in the standard library only: an accuracy's interval, a
paired test of two variants on the same samples, and percentiles.

* `wilson_interval`: the Wilson score interval of a proportion. Unlike the normal approximation it
  stays inside 0..1 and is honest at 0/n and n/n, which small evaluations hit.
* `mcnemar`: did two variants, answering the same samples, differ in accuracy? Only the samples
  where they disagree count. Exact (two-sided binomial) below 25 discordant samples, else the
  chi-square statistic with continuity correction, as the textbooks advise.
* `paired_bootstrap`: the mean paired difference of two score lists (partial credit too) with a
  percentile interval, deterministic for a seed.
* `percentile`: linear interpolation between the closest ranks (numpy's default), for latency p50/p95.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

__all__ = ["EXACT_BELOW", "McNemar", "mcnemar", "paired_bootstrap", "percentile", "wilson_interval"]

EXACT_BELOW = 25
"""McNemar's test is exact when fewer samples than this are discordant."""


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence!r} is not between 0 and 1 (e.g. 0.95)")
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of `successes` out of `n`; (0, 1) when there is nothing to measure."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"{successes} successes out of {n} is not a proportion")
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0/n and n/n the bound is exactly 0 or 1; the subtraction would leave a rounding error.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class McNemar:
    """McNemar's test of two variants on the same samples."""

    only_a: int
    """Samples variant A got right and B wrong."""
    only_b: int
    """Samples variant B got right and A wrong."""
    p_value: float
    """Two-sided: how likely a split at least this uneven is if both variants were as accurate."""
    method: Literal["exact", "chi-square"]
    """"exact" (binomial) below `EXACT_BELOW` discordant samples, else "chi-square" (continuity-corrected)."""


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """McNemar's test of `a[i]` and `b[i]`, whether each variant answered sample i correctly."""
    if len(a) != len(b):
        raise ValueError(f"paired results differ in length: {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    discordant = only_a + only_b
    if discordant < EXACT_BELOW:
        # Under the null hypothesis each discordant sample is A's with probability 1/2: the p-value
        # is twice the tail of Binomial(discordant, 1/2) at the smaller count, at most 1.
        tail = sum(math.comb(discordant, i) for i in range(min(only_a, only_b) + 1)) / 2**discordant
        return McNemar(only_a, only_b, min(1.0, 2 * tail), "exact")
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    # The chi-square distribution with one degree of freedom is a squared standard normal:
    # P(X > s) = P(|Z| > sqrt(s)) = erfc(sqrt(s / 2)).
    return McNemar(only_a, only_b, math.erfc(math.sqrt(statistic / 2)), "chi-square")


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    iterations: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """The mean of `a[i] - b[i]` and its percentile bootstrap interval: (mean, low, high).

    Samples are resampled with replacement `iterations` times by a `random.Random(seed)`, so the same
    inputs and seed give the same interval."""
    if len(a) != len(b):
        raise ValueError(f"paired results differ in length: {len(a)} and {len(b)}")
    if not a:
        raise ValueError("no paired results to compare")
    if iterations < 1:
        raise ValueError(f"iterations {iterations!r} is not 1 or more")
    tail = (1 - confidence) / 2 * 100
    _z(confidence)  # validates it
    differences = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    n = len(differences)
    rng = random.Random(seed)
    means = [math.fsum(rng.choices(differences, k=n)) / n for _ in range(iterations)]
    return math.fsum(differences) / n, percentile(means, tail), percentile(means, 100 - tail)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) of `values`, interpolating linearly between the closest ranks."""
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q!r} is not between 0 and 100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
