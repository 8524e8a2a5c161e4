"""Battle tournaments between checkpoints.

Every pair of checkpoints plays ``games`` games; which pairs play is the tournament's design
(``PAIRS``). Games come in mirrored pairs: games 2k and
2k+1 start from the same seed with the teams swapped, so each model plays each side equally often
and neither profits from a lucky side or layout. A game is won by the side with more survivors
at the end (after ``max_steps`` or when a side is wiped out); equal survivors are a tie.

The checkpoints are also grouped (by default by algorithm, read from each checkpoint's own config)
and the groups compared with intervals that count the variation between seeds (``groups``).

A tournament takes the games it can from the report already in its folder and plays only the
others (``reuse``), so adding players costs only their games.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cmfq.evaluation.figures import plot_win_rates
from cmfq.evaluation.games import GAMES_AT_ONCE, game_seed, play_batches
from cmfq.evaluation.groups import (
    algorithm_matrix,
    compare_algorithms,
    markdown_section,
)
from cmfq.evaluation.match import ArenaSpec, Game
from cmfq.evaluation.players import (
    RANDOM,
    checkpoint_groups,
    digest,
    training_seeds,
    unique_labels,
)
from cmfq.evaluation.report import (
    GameRecord,
    markdown_report,
    standings,
    summarise_pairs,
    tie_matrix,
    win_rate_matrix,
    write_csv,
    write_json,
)
from cmfq.evaluation.reuse import as_played_now, earlier_games, game_key
from cmfq.training.config import RunOptions

REPORT_FILES = ("report.json", "pairs.csv", "games.csv", "report.md", "win_rate.png")
ALGORITHM_FILES = ("algorithms.csv", "algorithm_pairs.csv", "algorithm_win_rate.png")
"""Written beside ``REPORT_FILES`` when the checkpoints form at least two groups."""


@dataclass(frozen=True)
class Settings:
    """What every game of a tournament shares."""

    env: str = "battle"
    map_size: int = RunOptions.map_size
    games: int = 50
    """Games per pair."""
    seed: int = 0
    env_options: dict = field(default_factory=dict)
    pairs: str = "all"
    """Which pairs play (``PAIRS``)."""


PAIRS = ("all", "between-groups", "seed-matched")
"""The designs of a tournament: ``all`` pairs; ``between-groups``, all but the pairs of one group
(e.g. two seeds of one algorithm: they say nothing about how the groups compare);
``seed-matched``, each checkpoint against the checkpoints of every other group trained with the
same seed (one seed gives every group the same initial weights), and ``random`` against each
checkpoint once."""


def pairs_to_play(
    design: str, groups: Sequence[str], seeds: Sequence[int | None] | None = None,
) -> list[tuple[int, int]]:
    """The pairs (a, b), a < b, of checkpoints (each one's group and, for ``seed-matched``, its
    training seed, None for ``random``) that play under ``design`` (``PAIRS``). Raises
    ValueError where no pair plays, or where a seed of one group is missing from another."""
    if design not in PAIRS:
        raise ValueError(f"pairs must be one of {PAIRS}, got {design!r}")
    if len(groups) < 2:
        raise ValueError(f"a tournament needs at least two checkpoints, got {len(groups)}")
    every = itertools.combinations(range(len(groups)), 2)
    if design == "all":
        return list(every)
    if design == "seed-matched":
        if seeds is None:
            raise ValueError("seed-matched pairs need each checkpoint's training seed")
        _check_seeds_match(groups, seeds)
        pairs = [(a, b) for a, b in every if groups[a] != groups[b]
                 and (RANDOM in (groups[a], groups[b]) or seeds[a] == seeds[b])]
    else:
        pairs = [(a, b) for a, b in every if groups[a] != groups[b]]
    if not pairs:
        raise ValueError("no pair to play: every checkpoint is in the same group")
    return pairs


def _check_seeds_match(groups: Sequence[str], seeds: Sequence[int | None]) -> None:
    """Every group but ``random`` must hold checkpoints of the same training seeds."""
    of: dict[str, set[int]] = {}
    for group, seed in zip(groups, seeds, strict=True):
        if group != RANDOM:
            of.setdefault(group, set()).add(seed)
    for g, h in itertools.permutations(of, 2):
        missing = sorted(of[g] - of[h])
        if missing:
            raise ValueError(
                f"seed-matched pairs: {g} has seed(s) {missing} that {h} lacks ({h}'s seeds: "
                f"{sorted(of[h])}); give every group the same seeds, or use --pairs "
                "between-groups")


def schedule(pairs: Sequence[tuple[int, int]], games: int, seed: int) -> list[Game]:
    """Each pair (a, b), a < b, plays ``games`` games (an even number: mirrored pairs); ``a``
    plays the first group in even games and the second in odd ones, and each even game's seed is
    reused by the next. A pair's games do not depend on which other pairs play."""
    if games < 2 or games % 2:
        raise ValueError(f"games per pair must be even and at least 2 (mirrored pairs: same "
                         f"seed, sides swapped), got {games}")
    return [
        Game((a, b) if k % 2 == 0 else (b, a), k, game_seed(seed, k // 2))
        for a, b in pairs
        for k in range(games)
    ]


def to_record(game: Game, result, labels: Sequence[str]) -> GameRecord:
    """The game seen from the pair's first model (the lower checkpoint index)."""
    groups = tuple(result.groups)  # in the env's order, the order of ``game.players``
    a_side = 0 if game.players[0] < game.players[1] else 1
    a, b = groups[a_side], groups[1 - a_side]
    ga, gb = result.groups[a], result.groups[b]
    return GameRecord(
        a=labels[game.players[a_side]], b=labels[game.players[1 - a_side]], game=game.index,
        seed=game.seed, a_side=a_side, a_survivors=ga.survivors, b_survivors=gb.survivors,
        a_kills=ga.kills, b_kills=gb.kills, a_reward=ga.reward, b_reward=gb.reward,
        steps=result.steps,
    )


def run_tournament(
    paths: Sequence[str | Path], settings: Settings, out: str | Path, workers: int = 1,
    group_by: str = "algo", address: str | None = None, at_once: int = GAMES_AT_ONCE,
    reuse: bool = True,
) -> dict:
    """Play the tournament and write its report files (``REPORT_FILES``, and ``ALGORITHM_FILES``
    where the checkpoints form several groups by ``group_by``) into ``out``; the games run in
    ``workers`` processes, or on the Ray cluster at ``address``, each playing ``at_once`` games at
    a time (see ``play_batches``).

    With ``reuse``, the games that the report already in ``out`` holds between the same checkpoint
    files under the same game settings are taken from it (``reuse.earlier_games``), and only the
    others are played: the report is the one a fresh tournament would write. How many games are
    reused and played is printed, once every player has been loaded and checked."""
    if settings.env != "battle":
        raise ValueError(f"tournaments are played in battle, not {settings.env!r}")
    if settings.pairs not in PAIRS:
        raise ValueError(f"pairs must be one of {PAIRS}, got {settings.pairs!r}")
    labels = unique_labels(paths)
    groups = checkpoint_groups(paths, labels, group_by)
    seeds = training_seeds(paths, labels) if settings.pairs == "seed-matched" else None
    protocol = tournament_protocol(settings, labels, paths)
    spec = ArenaSpec(tuple(map(str, paths)), settings.env, settings.map_size,
                     dict(settings.env_options))
    pairs = pairs_to_play(settings.pairs, [groups[label] for label in labels],
                          None if seeds is None else [seeds.get(label) for label in labels])
    games = schedule(pairs, settings.games, settings.seed)
    arena = spec.build()  # loads and checks every player: a bad one fails before a word is said
    earlier_file = Path(out) / "report.json"
    earlier = earlier_games(earlier_file, protocol) if reuse else {}
    keys = [game_key(g, paths) for g in games]
    to_play = [g for g, key in zip(games, keys, strict=True) if key not in earlier]
    reused = f"{len(games) - len(to_play)} games reused from {earlier_file}, " if earlier else ""
    print(f"{reused}{len(to_play)} games to play", flush=True)
    played = iter(play_batches(spec, to_play, workers=workers, at_once=at_once,
                               desc="tournament", address=address, arena=arena)
                  if to_play else ())
    records = [as_played_now(g, earlier[key], paths, labels) if key in earlier
               else to_record(g, next(played), labels) for g, key in zip(games, keys, strict=True)]
    return write_tournament_report(out, labels, settings, protocol, records, groups, group_by,
                                   seeds)


def tournament_protocol(
    settings: Settings, labels: Sequence[str], paths: Sequence[str | Path],
) -> dict:
    """What a report says about how its games were played: the settings, and each checkpoint's
    path and SHA-256 (``players.digest``) by label."""
    return {
        "env": settings.env,
        "map_size": settings.map_size,
        "games_per_pair": settings.games,
        "pairs": settings.pairs,
        "seed": settings.seed,
        **settings.env_options,
        "checkpoints": {label: str(path) for label, path in zip(labels, paths, strict=True)},
        "sha256": {label: digest(path) for label, path in zip(labels, paths, strict=True)},
    }


def write_tournament_report(
    out: str | Path, labels: Sequence[str], settings: Settings, protocol: dict,
    records: Sequence[GameRecord], groups: dict[str, str] | None = None, group_by: str = "algo",
    seeds: dict[str, int] | None = None,
) -> dict:
    """Write the report files of a tournament's ``records`` into ``out`` and return the report;
    ``seeds`` (label -> training seed) for a seed-matched tournament (``compare_algorithms``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = summarise_pairs(records)
    table = standings(pairs)
    protocol = dict(protocol)
    report = {"protocol": protocol, "standings": table, "pairs": pairs}
    several = groups is not None and len(set(groups.values())) > 1
    if several:
        protocol["group_by"] = group_by
        algorithms = compare_algorithms(pairs, groups, seeds)
        report["algorithms"] = algorithms
        if algorithms.standings:
            write_csv(out / "algorithms.csv", algorithms.standings)
        else:  # one group and random: no field
            (out / "algorithms.csv").unlink(missing_ok=True)
        every_pair = algorithms.pairs + algorithms.against_random
        write_csv(out / "algorithm_pairs.csv", every_pair)
        names = list(algorithms.members)
        wins, ties = algorithm_matrix(names, every_pair)
        plot_win_rates(names, wins, out / "algorithm_win_rate.png", ties=ties,
                       title=f"{settings.env}, {settings.map_size}² map: win rate of row vs "
                       "column, mean over seeds")
    else:  # those of an earlier report in ``out`` would contradict this one
        for name in ALGORITHM_FILES:
            (out / name).unlink(missing_ok=True)
    report["games"] = list(records)
    write_json(out / "report.json", report)
    write_csv(out / "pairs.csv", pairs)
    write_csv(out / "games.csv", records)
    plot_win_rates(labels, win_rate_matrix(labels, pairs), out / "win_rate.png",
                   title=f"{settings.env}, {settings.map_size}² map: win rate of row vs column",
                   ties=tie_matrix(labels, pairs))
    shown = {k: v for k, v in protocol.items() if k not in ("checkpoints", "sha256")}
    text = markdown_report("Tournament", shown, table, pairs, heatmap="win_rate.png")
    if several:
        text += "\n" + markdown_section(algorithms, group_by, heatmap="algorithm_win_rate.png")
    (out / "report.md").write_text(text)
    return report
