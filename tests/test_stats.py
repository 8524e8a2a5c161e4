import math

import pytest

from cmfq.evaluation.stats import mean_interval, t_quantile_975, wilson_interval


def wilson_by_hand(k, n, z=1.959963984540054):
    # The textbook form: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n).
    p = k / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / denom, (centre + half) / denom


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Published values (e.g. Newcombe 1998, table I; Brown, Cai & DasGupta 2001).
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
    ],
)
def test_wilson_matches_published_intervals(k, n, low, high):
    estimate = wilson_interval(k, n)
    assert estimate.value == pytest.approx(k / n)
    assert estimate.low == pytest.approx(low, abs=1e-4)
    assert estimate.high == pytest.approx(high, abs=1e-4)


@pytest.mark.parametrize(("k", "n"), [(1, 1), (3, 7), (49, 50), (12, 50), (1, 1000)])
def test_wilson_matches_formula_and_contains_point(k, n):
    estimate = wilson_interval(k, n)
    assert (estimate.low, estimate.high) == pytest.approx(wilson_by_hand(k, n))
    assert 0.0 <= estimate.low <= estimate.value <= estimate.high <= 1.0


def test_wilson_is_symmetric_in_wins_and_losses():
    wins, losses = wilson_interval(7, 20), wilson_interval(13, 20)
    assert wins.low == pytest.approx(1 - losses.high)
    assert wins.high == pytest.approx(1 - losses.low)


def test_wilson_narrows_with_more_rounds():
    small, large = wilson_interval(6, 10), wilson_interval(60, 100)
    assert large.high - large.low < small.high - small.low


@pytest.mark.parametrize(("k", "n", "error"), [
    (1, 0, ValueError), (-1, 5, ValueError), (6, 5, ValueError), (1.5, 5, TypeError),
    (True, 5, TypeError),
])
def test_wilson_rejects_bad_counts(k, n, error):
    with pytest.raises(error):
        wilson_interval(k, n)


def test_mean_interval_by_hand():
    # mean 3, sample variance ((−2)²+(−1)²+0+1²+2²)/4 = 2.5, half-width 1.96·sqrt(2.5/5).
    estimate = mean_interval([1, 2, 3, 4, 5])
    half = 1.959963984540054 * math.sqrt(0.5)
    assert estimate.value == pytest.approx(3.0)
    assert (estimate.low, estimate.high) == pytest.approx((3 - half, 3 + half))


def test_mean_interval_of_constant_values_is_a_point():
    assert tuple(mean_interval([4.0, 4.0, 4.0])) == pytest.approx((4.0, 4.0, 4.0))


def test_mean_interval_of_one_value_has_unknown_spread():
    estimate = mean_interval([2.5])
    assert estimate.value == 2.5
    assert math.isnan(estimate.low) and math.isnan(estimate.high)


def test_mean_interval_rejects_empty():
    with pytest.raises(ValueError):
        mean_interval([])


@pytest.mark.parametrize(("df", "table"), [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764),
                                          (9, 2.2622), (29, 2.0452), (10_000, 1.9602)])
def test_t_quantile_matches_the_tables(df, table):
    assert t_quantile_975(df) == pytest.approx(table, abs=0.004 if df == 3 else 1e-3)


def test_t_quantile_rejects_bad_degrees_of_freedom():
    for df in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="degrees of freedom"):
            t_quantile_975(df)
