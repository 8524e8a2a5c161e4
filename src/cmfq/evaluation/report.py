"""Tournament results: per-game records, their per-pair and per-model summaries, the JSON, CSV
and Markdown writers, and the JSON reader.

Every record and summary is seen from the first model of its pair, ``a``: a game is a win for
``a`` when it ends with more survivors than ``b``, a loss with fewer and a tie with as many.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cmfq.evaluation.stats import Estimate, mean_interval, wilson_interval


@dataclass(frozen=True)
class GameRecord:
    """One game between models ``a`` and ``b``; ``a_side`` is the team index ``a`` played."""

    a: str
    b: str
    game: int
    seed: int
    a_side: int
    a_survivors: int
    b_survivors: int
    a_kills: int
    b_kills: int
    a_reward: float
    b_reward: float
    steps: int

    @property
    def outcome(self) -> str:
        if self.a_survivors > self.b_survivors:
            return "win"
        if self.a_survivors < self.b_survivors:
            return "loss"
        return "tie"

    def flipped(self) -> GameRecord:
        """The same game seen from ``b``."""
        return replace(
            self, a=self.b, b=self.a, a_side=1 - self.a_side, a_survivors=self.b_survivors,
            b_survivors=self.a_survivors, a_kills=self.b_kills, b_kills=self.a_kills,
            a_reward=self.b_reward, b_reward=self.a_reward,
        )


@dataclass(frozen=True)
class PairSummary:
    """Outcome counts of ``a`` against ``b`` with ``a``'s win rate and both sides' means."""

    a: str
    b: str
    games: int
    wins: int
    losses: int
    ties: int
    win_rate: Estimate
    a_kills: Estimate
    b_kills: Estimate
    a_reward: Estimate
    b_reward: Estimate


@dataclass(frozen=True)
class Standing:
    """A model's outcome counts over all of its opponents."""

    model: str
    games: int
    wins: int
    losses: int
    ties: int
    win_rate: Estimate


def summarise_pairs(records: Iterable[GameRecord]) -> list[PairSummary]:
    """One summary per ``(a, b)`` pair, in order of the pair's first record."""
    by_pair: dict[tuple[str, str], list[GameRecord]] = {}
    for record in records:
        by_pair.setdefault((record.a, record.b), []).append(record)
    summaries = []
    for (a, b), games in by_pair.items():
        outcomes = [r.outcome for r in games]
        wins = outcomes.count("win")
        summaries.append(
            PairSummary(
                a=a,
                b=b,
                games=len(games),
                wins=wins,
                losses=outcomes.count("loss"),
                ties=outcomes.count("tie"),
                win_rate=wilson_interval(wins, len(games)),
                a_kills=mean_interval([r.a_kills for r in games]),
                b_kills=mean_interval([r.b_kills for r in games]),
                a_reward=mean_interval([r.a_reward for r in games]),
                b_reward=mean_interval([r.b_reward for r in games]),
            )
        )
    return summaries


def standings(pairs: Iterable[PairSummary]) -> list[Standing]:
    """Each model's totals over all of its pairs, best win rate first."""
    totals: dict[str, list[int]] = {}
    for pair in pairs:
        sides = ((pair.a, pair.wins, pair.losses), (pair.b, pair.losses, pair.wins))
        for model, wins, losses in sides:
            total = totals.setdefault(model, [0, 0, 0, 0])
            total[0] += pair.games
            total[1] += wins
            total[2] += losses
            total[3] += pair.ties
    table = [
        Standing(model, games, wins, losses, ties, wilson_interval(wins, games))
        for model, (games, wins, losses, ties) in totals.items()
    ]
    return sorted(table, key=lambda s: (-s.win_rate.value, s.model))


def win_rate_matrix(models: Sequence[str], pairs: Iterable[PairSummary]) -> list[list[float]]:
    """``matrix[i][j]``: the share of games that ``models[i]`` won against ``models[j]``; NaN on
    the diagonal and for pairs that did not play."""
    return _pair_matrix(models, pairs, lambda p: p.wins, lambda p: p.losses)


def tie_matrix(models: Sequence[str], pairs: Iterable[PairSummary]) -> list[list[float]]:
    """``matrix[i][j]``: the share of tied games between ``models[i]`` and ``models[j]``."""
    return _pair_matrix(models, pairs, lambda p: p.ties, lambda p: p.ties)


def _pair_matrix(models, pairs, of_a, of_b) -> list[list[float]]:
    index = {model: i for i, model in enumerate(models)}
    matrix = [[math.nan] * len(models) for _ in models]
    for pair in pairs:
        i, j = index[pair.a], index[pair.b]
        matrix[i][j] = of_a(pair) / pair.games
        matrix[j][i] = of_b(pair) / pair.games
    return matrix


def _plain(value):
    """JSON-ready copy: estimates become ``{value, low, high}`` and NaN becomes null."""
    if isinstance(value, Estimate):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _flat(summary) -> dict:
    """CSV row: each estimate ``x`` becomes the columns ``x``, ``x_low`` and ``x_high``."""
    row = {}
    for field in dataclasses.fields(summary):
        value = getattr(summary, field.name)
        if isinstance(value, Estimate):
            row[field.name] = value.value
            row[f"{field.name}_low"] = value.low
            row[f"{field.name}_high"] = value.high
        else:
            row[field.name] = value
    return row


def write_csv(path: Path, rows: Sequence) -> None:
    """Write dataclass instances (records or summaries) as CSV, one row each."""
    flat = [_flat(row) for row in rows]
    if not flat:
        raise ValueError(f"no rows to write to {path}")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)


def write_json(path: Path, report: Mapping) -> None:
    with open(path, "w") as f:
        json.dump(_plain(report), f, indent=2)
        f.write("\n")


# Reports in the old words, which called a game a round, use these keys.
_OLD_KEYS = {"rounds_per_pair": "games_per_pair", "rounds_per_model": "games_per_model",
             "rounds": "games", "round": "game"}
_BY_LABEL = ("checkpoints", "sha256", "members", "seeds")


def read_report(path: str | Path) -> dict:
    """A report.json of ``cmfq tournament`` (battle or tiger-deer), the keys of a report in the
    old words renamed to today's: ``rounds_per_pair`` is ``games_per_pair``, a summary's
    ``rounds`` is ``games``, a record's ``round`` is ``game``."""
    def renamed(value):
        if isinstance(value, dict):
            # Keyed by label (checkpoints, digests, group members): names, not fields.
            return {_OLD_KEYS.get(k, k): v if k in _BY_LABEL else renamed(v)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [renamed(v) for v in value]
        return value

    return renamed(json.loads(Path(path).read_text()))


def format_rate(estimate: Estimate) -> str:
    """``0.62 [0.48, 0.74]``: a rate (or a mean with an asymmetric interval) with its interval
    (none when unknown)."""
    if math.isnan(estimate.low):
        return f"{estimate.value:.2f}"
    return f"{estimate.value:.2f} [{estimate.low:.2f}, {estimate.high:.2f}]"


def format_mean(estimate: Estimate) -> str:
    """``12.30 ± 1.20``: a mean with its interval's half-width (none when unknown)."""
    if math.isnan(estimate.low):
        return f"{estimate.value:.2f}"
    return f"{estimate.value:.2f} ± {estimate.high - estimate.value:.2f}"


def markdown_report(
    title: str, settings: Mapping[str, object], table: Sequence[Standing],
    pairs: Sequence[PairSummary], heatmap: str | None = None,
) -> str:
    """The report as Markdown: settings, the standings, one row per pair and the heatmap."""
    lines = [f"# {title}", ""]
    lines += [f"- {key}: {value}" for key, value in settings.items()]
    lines += [
        "", "Win rate: games won / games played (ties count as not won), "
        "with its Wilson 95% interval; means are per game, ± the 95% normal half-width.", "",
        "## Standings", "",
        "| model | games | wins | losses | ties | win rate [95% CI] |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {s.model} | {s.games} | {s.wins} | {s.losses} | {s.ties} "
        f"| {format_rate(s.win_rate)} |"
        for s in table
    ]
    lines += [
        "", "## Pairs", "",
        "| A | B | games | A wins | A losses | ties | A win rate [95% CI] "
        "| A kills | B kills | A reward | B reward |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for p in pairs:
        means = " | ".join(map(format_mean, (p.a_kills, p.b_kills, p.a_reward, p.b_reward)))
        lines.append(
            f"| {p.a} | {p.b} | {p.games} | {p.wins} | {p.losses} | {p.ties} "
            f"| {format_rate(p.win_rate)} | {means} |"
        )
    if heatmap:
        lines += ["", f"![win rate of the row model against the column model]({heatmap})"]
    return "\n".join(lines) + "\n"
