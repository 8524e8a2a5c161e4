import math

import pytest

from cmfq.evaluation.stats import mean_interval, t_quantile_975, unit_interval, wilson_interval


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


def test_unit_interval_of_one_sample_is_the_t_interval_of_its_values():
    values = [0.2, 0.5, 0.9, 0.4]
    mean = sum(values) / 4
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    half = t_quantile_975(3) * sd / 2
    got = unit_interval(mean, [[v / 4 for v in values]])
    assert got == pytest.approx((mean, mean - half, mean + half))


def test_unit_interval_adds_the_samples_and_takes_the_smallest_degrees_of_freedom():
    # A 2 x 3 table of rates: rows are one group's checkpoints, columns the other's.
    rows, cols = [0.3, 0.7], [0.4, 0.5, 0.6]
    table = [[r + c - 0.5 for c in cols] for r in rows]
    mean = sum(map(sum, table)) / 6
    row_means = [sum(r) / 3 for r in table]
    col_means = [sum(table[i][j] for i in range(2)) / 2 for j in range(3)]
    var = lambda x: sum((v - sum(x) / len(x)) ** 2 for v in x) / (len(x) - 1)  # noqa: E731
    se = math.sqrt(var(row_means) / 2 + var(col_means) / 3)
    got = unit_interval(mean, [[m / 2 for m in row_means], [m / 3 for m in col_means]])
    assert got == pytest.approx((mean, mean - t_quantile_975(1) * se,
                                 mean + t_quantile_975(1) * se))


def test_unit_interval_takes_a_single_unit_as_fixed_and_keeps_rates_in_bounds():
    assert math.isnan(unit_interval(0.5, [[0.5]]).low)  # no unit varies: unknown
    assert unit_interval(0.5, [[0.5], [0.2, 0.3]]) == unit_interval(0.5, [[0.2, 0.3]])
    wide = unit_interval(0.9, [[0.5, 0.4]])
    assert wide.low < 0 < 1 < wide.high
    assert unit_interval(0.9, [[0.5, 0.4]], rate=True)[1:] == (0.0, 1.0)
