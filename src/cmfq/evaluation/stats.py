"""Interval estimates for the evaluation reports: Wilson score intervals for win rates, normal
intervals for per-game means, and t-intervals for means over a few seeds (``unit_interval``)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import NamedTuple

#: Two-sided 95% quantile of the standard normal distribution (1.96).
Z_95 = statistics.NormalDist().inv_cdf(0.975)


class Estimate(NamedTuple):
    """A point estimate with the bounds of its confidence interval."""

    value: float
    low: float
    high: float


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Estimate:
    """Proportion ``successes / trials`` with its Wilson score interval.

    Unlike the normal (Wald) interval it stays inside [0, 1] and does not collapse to a point
    when every game is won or every game is lost, which is common between unequal models.
    """
    if isinstance(successes, bool) or isinstance(trials, bool):
        raise TypeError("successes and trials must be integers, not bools")
    if int(successes) != successes or int(trials) != trials:
        raise TypeError(f"successes and trials must be integers, got {successes!r}, {trials!r}")
    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, trials={trials}], got {successes}")
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"z must be positive and finite, got {z}")
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials))
    # Clamp the rounding residue so that 0/n and n/n give exactly 0 and 1 as bounds.
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], z: float = Z_95) -> Estimate:
    """Sample mean with the normal-approximation interval ``mean ± z·s/√n``.

    ``s`` is the sample standard deviation (n − 1 in the denominator). With a single value the
    spread is unknown and both bounds are NaN.
    """
    if len(values) == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Estimate(mean, math.nan, math.nan)
    half = z * statistics.stdev(values, mean) / math.sqrt(len(values))
    return Estimate(mean, mean - half, mean + half)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t distribution with ``df`` degrees of freedom: the factor
    of the 95% interval mean ± t·s/√n of n = df + 1 values.

    Exact for df 1 and 2; above, the Cornish-Fisher expansion of Abramowitz & Stegun 26.7.5 in
    powers of 1/df: 3.179 for the exact 3.182 at df = 3, within 0.001 from df = 4 on.
    """
    if isinstance(df, bool) or int(df) != df or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    if df == 1:
        return math.tan(math.pi * 0.475)
    if df == 2:
        return 0.95 / math.sqrt(2 * 0.975 * 0.025)
    z = Z_95
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(term / df ** (k + 1) for k, term in enumerate(terms))


def unit_interval(
    value: float, samples: Sequence[Sequence[float]], *, rate: bool = False,
) -> Estimate:
    """A mean over independently drawn units (a group's seeds or checkpoints) with its 95%
    t-interval, ``value ± t·se``.

    ``samples`` holds, per independent sample of units, each unit's share of ``value``: the part
    of the mean that its games make up (for the plain mean of n values x_u, x_u / n). Then
    se² = Σ over samples of n/(n − 1)·Σ_u (share_u − mean share)², the delete-one jackknife's
    variance of a linear statistic (for one sample: s²/n), and t is Student's 0.975 quantile with
    n − 1 degrees of freedom of the smallest sample that varies. A sample of one unit (a single
    checkpoint) is taken as fixed; with no other, both bounds are NaN. With ``rate`` the bounds
    are kept in [0, 1].
    """
    spread, units = 0.0, []
    for shares in samples:
        x = [float(v) for v in shares]
        if len(x) > 1:
            spread += len(x) / (len(x) - 1) * sum((v - statistics.fmean(x)) ** 2 for v in x)
            units.append(len(x))
    if not units:
        return Estimate(value, math.nan, math.nan)
    half = t_quantile_975(min(units) - 1) * math.sqrt(spread)
    low, high = value - half, value + half
    if rate:
        low, high = max(low, 0.0), min(high, 1.0)
    return Estimate(value, low, high)
