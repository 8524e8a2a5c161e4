"""Per-group results across seeds (checkpoints grouped by algorithm or by any config field), on
synthetic round robins."""

import itertools

import numpy as np
import pytest

from cmfq.evaluation.groups import (
    algorithm_matrix,
    compare_algorithms,
    members_of,
    two_stage_mean,
)
from cmfq.evaluation.report import GameRecord, summarise_pairs
from cmfq.evaluation.stats import wilson_interval


def games_between(a, b, wins, losses, ties):
    """Records of a round robin pair: ``wins`` won by a, ``losses`` by b, ``ties`` tied."""
    outcomes = [(2, 1)] * wins + [(1, 2)] * losses + [(1, 1)] * ties
    return [GameRecord(a, b, i, seed=i, a_side=i % 2, a_survivors=sa, b_survivors=sb,
                        a_kills=0, b_kills=0, a_reward=0.0, b_reward=0.0, steps=1)
            for i, (sa, sb) in enumerate(outcomes)]


def round_robin(rates, games=40):
    """Pairs of a tournament where checkpoint x wins ``rates[x][y]`` of its games against y
    and loses the rest; checkpoints are named ``<group>/<seed>``."""
    records = []
    for a, b in itertools.combinations(rates, 2):
        wins = round(rates[a].get(b, 1 - rates[b].get(a, 0.5)) * games)
        records += games_between(a, b, wins, games - wins, 0)
    return summarise_pairs(records)


def groups_of(labels):
    return {label: label.split("/")[0] for label in labels}


def test_an_algorithm_that_always_wins_gets_an_interval_near_one():
    labels = [f"{g}/{s}" for g in ("strong", "weak") for s in range(3)]
    rates = {x: {y: 1.0 for y in labels if y.startswith("weak")} if x.startswith("strong")
             else {} for x in labels}
    results = compare_algorithms(round_robin(rates), groups_of(labels), seed=0)
    (pair,) = results.pairs
    assert (pair.a, pair.b, pair.checkpoints_a, pair.checkpoints_b) == ("strong", "weak", 3, 3)
    assert (pair.games, pair.wins, pair.losses, pair.ties) == (9 * 40, 9 * 40, 0, 0)
    assert pair.win_rate.value == 1.0 and pair.win_rate.low > 0.95
    assert pair.loss_rate.high < 0.05
    assert [s.algorithm for s in results.standings] == ["strong", "weak"]


def test_seed_variation_widens_the_interval_beyond_pooled_rounds():
    # Both "mixed" and "steady" win half of their games against "base" overall; the seeds of
    # "mixed" win 10% or 90%, those of "steady" 50% each.
    labels = [f"{g}/{s}" for g in ("mixed", "steady", "base") for s in range(4)]
    rates = {x: {} for x in labels}
    for s in range(4):
        for b in range(4):
            rates[f"mixed/{s}"][f"base/{b}"] = 0.1 if s % 2 else 0.9
            rates[f"steady/{s}"][f"base/{b}"] = 0.5
    results = compare_algorithms(round_robin(rates), groups_of(labels), seed=0)
    pairs = {(p.a, p.b): p for p in results.pairs}
    mixed, steady = pairs["mixed", "base"], pairs["steady", "base"]
    assert mixed.win_rate.value == pytest.approx(0.5) == steady.win_rate.value
    width = lambda e: e.high - e.low  # noqa: E731
    pooled = wilson_interval(mixed.wins, mixed.games)
    assert width(mixed.win_rate) > 3 * width(steady.win_rate)
    assert width(mixed.win_rate) > 3 * width(pooled)
    # Without seed variation the bootstrap is about as wide as the pooled Wilson interval.
    assert width(steady.win_rate) == pytest.approx(width(wilson_interval(320, 640)), rel=0.3)


def test_bootstrap_is_seeded_and_rates_add_up():
    labels = ["a/0", "a/1", "b/0", "b/1", "c/0"]
    rng = np.random.default_rng(5)
    records = []
    for x, y in itertools.combinations(labels, 2):
        wins, losses = rng.integers(0, 10, size=2)
        records += games_between(x, y, int(wins), int(losses), 20 - int(wins + losses))
    pairs = summarise_pairs(records)
    first = compare_algorithms(pairs, groups_of(labels), seed=3)
    assert compare_algorithms(pairs, groups_of(labels), seed=3) == first
    assert compare_algorithms(pairs, groups_of(labels), seed=4) != first
    for p in first.pairs:
        assert p.wins + p.losses + p.ties == p.games
        assert p.win_rate.low <= p.win_rate.value <= p.win_rate.high
        assert p.win_rate.value + p.loss_rate.value <= 1
    wins, ties = algorithm_matrix(list(first.members), first.pairs)
    assert np.isnan(wins[0][0])
    for i, j in itertools.permutations(range(3), 2):
        assert wins[i][j] + wins[j][i] + ties[i][j] == pytest.approx(1)
    # Against the field: the mean of the win rates against each other group.
    for s in first.standings:
        row = list(first.members).index(s.algorithm)
        assert s.win_rate.value == pytest.approx(np.nanmean(wins[row]))


def test_groups_and_bad_input():
    assert members_of({"x": "a", "y": "b", "z": "a"}) == {"a": ["x", "z"], "b": ["y"]}
    pairs = summarise_pairs(games_between("a/0", "b/0", 1, 1, 0))
    with pytest.raises(ValueError, match="two groups"):
        compare_algorithms(pairs, {"a/0": "a", "b/0": "a"})
    with pytest.raises(ValueError, match="no games between"):
        compare_algorithms(pairs, {"a/0": "a", "b/0": "b", "c/0": "c"})
    with pytest.raises(ValueError, match="samples"):
        compare_algorithms(pairs, groups_of(["a/0", "b/0"]), samples=0)


def test_two_stage_mean_is_the_mean_of_means_with_a_seed_interval():
    rng = np.random.default_rng(0)
    steady = two_stage_mean([[3.0] * 10, [3.0] * 30], rng)
    assert steady == (3.0, 3.0, 3.0)
    # Checkpoints that differ widen the interval; each counts once, whatever its games.
    apart = two_stage_mean([[0.0] * 10, [10.0] * 30, [2.0, 4.0]], rng)
    assert apart.value == pytest.approx(13 / 3)
    assert apart.low < 2 and apart.high > 7
    with pytest.raises(ValueError, match="one checkpoint or more"):
        two_stage_mean([[1.0], []], rng)
