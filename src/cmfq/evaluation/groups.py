"""Tournament results per group of checkpoints (by algorithm, or by any config field) across seeds,
with intervals that count the seeds' variation.

The checkpoints of a tournament fall into groups (by default one per algorithm: several seeds
each). How group G compares with group H depends on which pairs played (``tournament.PAIRS``):

- all pairs, or the pairs between groups: G's win rate against H is the mean, over every
  checkpoint g of G and h of H, of g's win rate against h. Each checkpoint is a draw of its
  group's training seeds, and each group's checkpoints an independent sample of them.
- seed-matched pairs: a checkpoint meets only the checkpoints of the other groups trained with
  the same seed, which gave every group the same initial weights. G's win rate against H is the
  mean over the seeds of each seed's win rate (its pairs' games pooled): the seed is the unit,
  and the groups are compared seed by seed.

The 95% interval is ``value ± t·se`` (``stats.unit_interval``) over those units. For a seed-
matched pair it is the t-interval over the seeds' win rates; for all pairs, se² is the variance
of G's checkpoints' mean rates over |G| plus that of H's over |H|, which counts the game noise
of each pair twice and so errs on the wide side. The simulations in tests/test_groups.py check
its coverage on hierarchical models of seeds (docs/evaluation.md gives the numbers).

``random`` is no group to compare with: every trained model beats it, and counting it in a group's
record against the field would compress the gaps between the others. It is reported apart
(``against_random``): each group's mean over its checkpoints of their win rate against random,
with the t-interval over those checkpoints.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cmfq.evaluation.players import RANDOM
from cmfq.evaluation.report import PairSummary, format_rate
from cmfq.evaluation.stats import Estimate, unit_interval


@dataclass(frozen=True)
class AlgorithmPair:
    """Group ``a`` against group ``b``: counts pooled over their checkpoints' pairs, and the
    mean win and loss rates of ``a`` (over checkpoint pairs, or over seeds in a seed-matched
    tournament) with their t-intervals."""

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
    """A group against all other groups but ``random``: ``win_rate`` is the mean of its win rates
    against each of them (every other group counts once, whatever its number of checkpoints)."""

    algorithm: str
    checkpoints: int
    games: int
    wins: int
    losses: int
    ties: int
    win_rate: Estimate


@dataclass(frozen=True)
class AlgorithmResults:
    """What ``compare_algorithms`` finds: the groups' members, the pairs of groups and the
    standings against the field (both without ``random``), each group against ``random`` (empty
    without it), and each checkpoint's training seed in a seed-matched tournament (else None)."""

    members: dict[str, list[str]]
    pairs: list[AlgorithmPair]
    standings: list[AlgorithmStanding]
    against_random: list[AlgorithmPair]
    seeds: dict[str, int] | None = None


def members_of(groups: Mapping[str, str]) -> dict[str, list[str]]:
    """Group -> its checkpoints' labels, groups in order of first appearance."""
    members: dict[str, list[str]] = {}
    for label, group in groups.items():
        members.setdefault(group, []).append(label)
    return members


Unit = tuple[Hashable, Hashable]
"""A unit of variation: (its sample, itself): (group, checkpoint label), or (None, training seed)
in a seed-matched tournament, where the seeds are one sample shared by every group."""


@dataclass(frozen=True)
class _Rates:
    """Group A's mean win and loss rates against group B over the cells that A and B played
    (a cell: a pair of checkpoints, or a seed's pairs), with each unit's share of both means,
    and the counts pooled over the cells."""

    win: float
    loss: float
    win_shares: dict[Unit, float]
    loss_shares: dict[Unit, float]
    counts: np.ndarray
    """Games, wins, losses."""


def _rates(
    found: Mapping[tuple[str, str], PairSummary], a_members: Sequence[str],
    b_members: Sequence[str], unit: Callable[[str], Unit],
) -> _Rates:
    """The rates of the checkpoints ``a_members`` against ``b_members``, each cell the games of
    the pairs between one unit of either side (the pairs of differing seeds did not play in a
    seed-matched tournament)."""
    cells: dict[tuple[Unit, Unit], np.ndarray] = {}
    for a, b in itertools.product(a_members, b_members):
        ua, ub = unit(a), unit(b)
        if ua[0] is None and ub[0] is None and ua != ub:
            continue
        if (a, b) not in found:
            raise ValueError(f"no games between {a} and {b}")
        cell = cells.setdefault((ua, ub), np.zeros(3, dtype=np.int64))
        cell += _from_a(found[a, b], a)
    win_shares: dict[Unit, float] = {}
    loss_shares: dict[Unit, float] = {}
    for (ua, ub), (games, wins, losses) in cells.items():
        for u in {ua, ub}:  # a seed-matched cell is one unit, counted once
            win_shares[u] = win_shares.get(u, 0.0) + wins / games / len(cells)
            loss_shares[u] = loss_shares.get(u, 0.0) + losses / games / len(cells)
    rates = np.array([c[1:] / c[0] for c in cells.values()])
    return _Rates(float(rates[:, 0].mean()), float(rates[:, 1].mean()), win_shares,
                  loss_shares, sum(cells.values()))


def _from_a(pair: PairSummary, a: str) -> np.ndarray:
    """Games, wins and losses of the pair, seen from checkpoint ``a``."""
    if pair.a == a:
        return np.array([pair.games, pair.wins, pair.losses])
    return np.array([pair.games, pair.losses, pair.wins])


def _interval(value: float, shares: Mapping[Unit, float]) -> Estimate:
    """``value`` with the t-interval of its units' ``shares`` (``stats.unit_interval``), each
    sample of units (a group's checkpoints, or the seeds) drawn independently."""
    samples: dict[Hashable, list[float]] = {}
    for (sample, _), share in shares.items():
        samples.setdefault(sample, []).append(share)
    return unit_interval(value, list(samples.values()), rate=True)


def _field_win_rate(parts: Sequence[_Rates]) -> Estimate:
    """The mean of a group's win rates against several others (against the field), with the
    t-interval of each unit's share of that mean."""
    shares: dict[Unit, float] = {}
    for part in parts:
        for u, v in part.win_shares.items():
            shares[u] = shares.get(u, 0.0) + v / len(parts)
    return _interval(float(np.mean([p.win for p in parts])), shares)


def _pair(a: str, b: str, members: Mapping[str, list[str]], rates: _Rates) -> AlgorithmPair:
    games, wins, losses = (int(c) for c in rates.counts)
    return AlgorithmPair(
        a=a, b=b, checkpoints_a=len(members[a]), checkpoints_b=len(members[b]), games=games,
        wins=wins, losses=losses, ties=games - wins - losses,
        win_rate=_interval(rates.win, rates.win_shares),
        loss_rate=_interval(rates.loss, rates.loss_shares),
    )


def compare_algorithms(
    pairs: Sequence[PairSummary], groups: Mapping[str, str],
    seeds: Mapping[str, int] | None = None,
) -> AlgorithmResults:
    """Win rates between the groups of checkpoints (``groups``: label -> group) of a tournament
    whose per-pair results are ``pairs``. With ``seeds`` (label -> training seed, for every
    checkpoint but ``random``) the tournament was seed-matched and the groups are compared seed
    by seed; without, every checkpoint is a unit of its group."""
    members = members_of(groups)
    if len(members) < 2:
        raise ValueError(f"results per algorithm need two groups, got {list(members)}")
    found = {}
    for p in pairs:
        found[p.a, p.b] = found[p.b, p.a] = p

    def unit(label: str) -> Unit:
        if seeds is None or groups[label] == RANDOM:
            return groups[label], label
        return None, seeds[label]

    def by_checkpoint(label: str) -> Unit:
        return groups[label], label

    trained = [g for g in members if g != RANDOM]
    rates = {}
    for a, b in itertools.permutations(trained, 2):
        rates[a, b] = _rates(found, members[a], members[b], unit)
    results = [_pair(a, b, members, rates[a, b])
               for a, b in itertools.combinations(trained, 2)]
    standings = []
    for g in trained if len(trained) > 1 else ():
        mine = [rates[g, h] for h in trained if h != g]
        games, wins, losses = (int(c) for c in sum(r.counts for r in mine))
        standings.append(AlgorithmStanding(
            algorithm=g, checkpoints=len(members[g]), games=games, wins=wins, losses=losses,
            ties=games - wins - losses, win_rate=_field_win_rate(mine),
        ))
    standings.sort(key=lambda s: (-s.win_rate.value, s.algorithm))
    against_random = [
        _pair(g, RANDOM, members, _rates(found, members[g], members[RANDOM], by_checkpoint))
        for g in trained if RANDOM in members
    ]
    return AlgorithmResults(members, results, standings, against_random,
                            None if seeds is None else dict(seeds))


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
    if results.seeds is None:
        how = ("Win rate of a group against another: the mean over their checkpoints' pairs of "
               "the pair's win rate, with a 95% t-interval over the checkpoints of both groups "
               "(each checkpoint a draw of its group's seeds).")
    else:
        how = ("Seed-matched pairs: each checkpoint met the checkpoints of the other groups "
               "trained with its seed. Win rate of a group against another: the mean over the "
               "seeds of each seed's win rate (its games pooled), with the 95% t-interval over "
               "the seeds.")
    lines = [
        f"## Per algorithm (checkpoints grouped by {group_by})", "",
        f"{how} Against the field: the mean of a group's win rates against every other group "
        "but random. Against random: the mean over a group's checkpoints of their win rates "
        "against random, with the t-interval over them.", "",
        "| group | checkpoints |", "|---|---|",
    ]
    seeds = results.seeds or {}
    lines += [f"| {g} | {', '.join(_named(c, seeds) for c in m)} |"
              for g, m in results.members.items()]
    if results.standings:
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
    titles = ("", "Against random, apart from the field:")
    for title, table in zip(titles, (results.pairs, results.against_random), strict=True):
        if not table:
            continue
        lines += ["", title] if title else []
        lines += [
            "", "| A | B | games | A wins | A losses | ties | A win rate [95% CI] "
            "| B win rate [95% CI] |",
            "|---|---|---:|---:|---:|---:|---|---|",
        ]
        lines += [
            f"| {p.a} | {p.b} | {p.games} | {p.wins} | {p.losses} | {p.ties} "
            f"| {format_rate(p.win_rate)} | {format_rate(p.loss_rate)} |"
            for p in table
        ]
    if heatmap:
        lines += ["", f"![win rate of the row group against the column group]({heatmap})"]
    return "\n".join(lines) + "\n"


def _named(label: str, seeds: Mapping[str, int]) -> str:
    return f"{label} (seed {seeds[label]})" if label in seeds else label
