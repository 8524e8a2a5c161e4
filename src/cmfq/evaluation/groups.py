"""Tournament results per group of checkpoints (by algorithm, or by any config field) across seeds,
with intervals that count the seeds' variation.

The checkpoints of a tournament fall into groups (by default one per algorithm: several seeds
each). The win rate of group G against group H is the mean, over every checkpoint g of G and h of
H, of g's win rate against h. Its 95% interval comes from a two-stage bootstrap: each sample draws
|G| checkpoints of G and |H| of H with replacement (the seeds), then each drawn pair's games with
replacement, and recomputes the mean; the interval is the 2.5 and 97.5 percentiles of the samples.
A pair's resampled games are drawn as counts: wins ~ Binomial(n, wins/n), then losses among the
rest, which is the same as drawing n of its games with replacement.

Where seeds disagree this interval is wider than one that pools the games, which treats an
algorithm's seeds as if they were one model. Resampling at both stages counts the game noise a
little twice, so the interval errs on the wide side. A group with one checkpoint has no seed
variation to draw from, and a pair that won every game always resamples to 1: the per-checkpoint
Wilson intervals remain the guide there.

``two_stage_mean`` applies the same bootstrap to a mean score per game (tiger-deer).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cmfq.evaluation.report import PairSummary, format_rate
from cmfq.evaluation.stats import Estimate

BOOTSTRAP_SAMPLES = 2000
"""Samples of the two-stage bootstrap (the percentiles move by about 0.005 between seeds)."""


@dataclass(frozen=True)
class AlgorithmPair:
    """Group ``a`` against group ``b``: counts pooled over their checkpoints' pairs, and the
    mean per-pair win and loss rates of ``a`` with their bootstrap intervals."""

    a: str
    b: str
    checkpoints_a: int
    checkpoints_b: int
    games: int
    wins: int
    losses: int
    ties: int
    win_rate: Estimate
    loss_rate: Estimate


@dataclass(frozen=True)
class AlgorithmStanding:
    """A group against all other groups: ``win_rate`` is the mean of its win rates against each
    of them (every other group counts once, whatever its number of checkpoints)."""

    algorithm: str
    checkpoints: int
    games: int
    wins: int
    losses: int
    ties: int
    win_rate: Estimate


@dataclass(frozen=True)
class AlgorithmResults:
    """What ``compare_algorithms`` finds: the groups' members, the pairs and the standings."""

    members: dict[str, list[str]]
    pairs: list[AlgorithmPair]
    standings: list[AlgorithmStanding]


def members_of(groups: Mapping[str, str]) -> dict[str, list[str]]:
    """Group -> its checkpoints' labels, groups in order of first appearance."""
    members: dict[str, list[str]] = {}
    for label, group in groups.items():
        members.setdefault(group, []).append(label)
    return members


def _counts(pairs: Sequence[PairSummary], rows: list[str], columns: list[str]) -> np.ndarray:
    """``[len(rows), len(columns), 3]``: wins, losses and ties of each row checkpoint against
    each column checkpoint, seen from the row."""
    found = {}
    for p in pairs:
        found[p.a, p.b] = (p.wins, p.losses, p.ties)
        found[p.b, p.a] = (p.losses, p.wins, p.ties)
    missing = [(r, c) for r in rows for c in columns if (r, c) not in found]
    if missing:
        raise ValueError(f"no games between {missing[0][0]} and {missing[0][1]}")
    return np.array([[found[r, c] for c in columns] for r in rows], dtype=np.int64)


def _interval(value: float, samples: np.ndarray) -> Estimate:
    low, high = np.quantile(samples, [0.025, 0.975])
    return Estimate(float(value), float(low), float(high))


def compare_algorithms(
    pairs: Sequence[PairSummary], groups: Mapping[str, str], *, samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> AlgorithmResults:
    """Win rates between the groups of checkpoints (``groups``: label -> group) of a round robin
    whose per-pair results are ``pairs``; the bootstrap is seeded with ``seed``."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    members = members_of(groups)
    if len(members) < 2:
        raise ValueError(f"results per algorithm need two groups, got {list(members)}")
    rng = np.random.default_rng(seed)
    # One draw of each group's checkpoints per sample, shared by all of the group's comparisons.
    drawn = {g: rng.integers(len(m), size=(samples, len(m))) for g, m in members.items()}
    rates: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
    results = []
    for a, b in itertools.combinations(members, 2):
        counts = _counts(pairs, members[a], members[b])
        n = counts.sum(-1)
        win_p, loss_p = counts[..., 0] / n, counts[..., 1] / n
        rows, cols = drawn[a][:, :, None], drawn[b][:, None, :]
        n_star = n[rows, cols]
        wins = rng.binomial(n_star, win_p[rows, cols])
        # Losses among the games not won: together the multinomial draw of n games.
        rest_p = np.divide(loss_p, 1 - win_p, out=np.zeros_like(loss_p), where=win_p < 1)
        rest_p = np.clip(rest_p, 0.0, 1.0)  # 0.9 / (1 - 0.1) rounds to just above 1
        losses = rng.binomial(n_star - wins, rest_p[rows, cols])
        win_rate = (win_p.mean(), (wins / n_star).mean(axis=(1, 2)))
        loss_rate = (loss_p.mean(), (losses / n_star).mean(axis=(1, 2)))
        rates[a, b], rates[b, a] = win_rate, loss_rate
        total = counts.sum(axis=(0, 1))
        results.append(AlgorithmPair(
            a=a, b=b, checkpoints_a=len(members[a]), checkpoints_b=len(members[b]),
            games=int(n.sum()), wins=int(total[0]), losses=int(total[1]), ties=int(total[2]),
            win_rate=_interval(*win_rate), loss_rate=_interval(*loss_rate),
        ))
    standings = []
    for g in members:
        mine = [p for p in results if g in (p.a, p.b)]
        others = [h for h in members if h != g]
        value = float(np.mean([rates[g, h][0] for h in others]))
        boot = np.mean([rates[g, h][1] for h in others], axis=0)
        wins = sum(p.wins if p.a == g else p.losses for p in mine)
        losses = sum(p.losses if p.a == g else p.wins for p in mine)
        games = sum(p.games for p in mine)
        standings.append(AlgorithmStanding(
            algorithm=g, checkpoints=len(members[g]), games=games, wins=wins, losses=losses,
            ties=games - wins - losses, win_rate=_interval(value, boot),
        ))
    standings.sort(key=lambda s: (-s.win_rate.value, s.algorithm))
    return AlgorithmResults(members, results, standings)


def two_stage_mean(
    values: Sequence[Sequence[float]], rng: np.random.Generator, samples: int = BOOTSTRAP_SAMPLES,
) -> Estimate:
    """The mean over checkpoints of their per-game means (``values[c]``: checkpoint c's games),
    with the 95% interval of the same two-stage bootstrap: checkpoints, then each drawn
    checkpoint's games, with replacement."""
    arrays = [np.asarray(v, dtype=float) for v in values]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("two_stage_mean needs one checkpoint or more, each with games")
    drawn = rng.integers(len(arrays), size=(samples, len(arrays)))
    means = np.empty(drawn.shape)
    for c, games in enumerate(arrays):
        where = drawn == c
        means[where] = games[rng.integers(games.size, size=(where.sum(), games.size))].mean(1)
    return _interval(np.mean([a.mean() for a in arrays]), means.mean(axis=1))


def algorithm_matrix(
    algorithms: Sequence[str], pairs: Sequence[AlgorithmPair],
) -> tuple[list[list[float]], list[list[float]]]:
    """The win rates (row vs column) and tie shares between ``algorithms``, NaN on the diagonal,
    in the layout of ``figures.plot_win_rates``."""
    index = {g: i for i, g in enumerate(algorithms)}
    wins = [[float("nan")] * len(algorithms) for _ in algorithms]
    ties = [[float("nan")] * len(algorithms) for _ in algorithms]
    for p in pairs:
        i, j = index[p.a], index[p.b]
        wins[i][j], wins[j][i] = p.win_rate.value, p.loss_rate.value
        ties[i][j] = ties[j][i] = 1 - p.win_rate.value - p.loss_rate.value
    return wins, ties


def markdown_section(results: AlgorithmResults, group_by: str, heatmap: str | None) -> str:
    """The per-algorithm part of the tournament report, as Markdown."""
    lines = [
        f"## Per algorithm (checkpoints grouped by {group_by})", "",
        "Win rate of a group against another: the mean over their checkpoints' pairs of the "
        "pair's win rate, with a 95% two-stage bootstrap interval (checkpoints within each group, "
        f"then games; {BOOTSTRAP_SAMPLES} samples, seeded by the tournament's seed). Against the "
        "field: the mean of a group's win rates against every other group.", "",
        "| group | checkpoints |", "|---|---|",
    ]
    lines += [f"| {g} | {', '.join(m)} |" for g, m in results.members.items()]
    lines += [
        "", "| group | checkpoints | games | wins | losses | ties "
        "| win rate vs the field [95% CI] |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {s.algorithm} | {s.checkpoints} | {s.games} | {s.wins} | {s.losses} | {s.ties} "
        f"| {format_rate(s.win_rate)} |"
        for s in results.standings
    ]
    lines += [
        "", "| A | B | games | A wins | A losses | ties | A win rate [95% CI] "
        "| B win rate [95% CI] |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    lines += [
        f"| {p.a} | {p.b} | {p.games} | {p.wins} | {p.losses} | {p.ties} "
        f"| {format_rate(p.win_rate)} | {format_rate(p.loss_rate)} |"
        for p in results.pairs
    ]
    if heatmap:
        lines += ["", f"![win rate of the row group against the column group]({heatmap})"]
    return "\n".join(lines) + "\n"
