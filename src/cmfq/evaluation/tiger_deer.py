"""Tiger-deer evaluation: each checkpoint hunts as the tigers against random deer for the same
seeded games; the report gives per game the tigers' total reward and the deer caught, per
checkpoint and per algorithm (over its checkpoints, with a t-interval over them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cmfq.evaluation.figures import plot_scores
from cmfq.evaluation.games import GAMES_AT_ONCE, game_seed, play_batches
from cmfq.evaluation.groups import members_of
from cmfq.evaluation.match import ArenaSpec, Game
from cmfq.evaluation.players import checkpoint_groups, unique_labels
from cmfq.evaluation.report import format_mean, format_rate, write_csv, write_json
from cmfq.evaluation.stats import Estimate, mean_interval, unit_interval

REPORT_FILES = ("report.json", "models.csv", "games.csv", "report.md", "scores.png")
ALGORITHM_FILES = ("algorithms.csv", "algorithm_scores.png")
"""Written beside ``REPORT_FILES`` when the checkpoints form at least two groups."""


@dataclass(frozen=True)
class HuntRecord:
    """One game of one model as the tigers."""

    model: str
    game: int
    seed: int
    reward: float
    deer_caught: int
    tigers_left: int
    deer_left: int
    steps: int


@dataclass(frozen=True)
class HuntSummary:
    model: str
    games: int
    reward: Estimate
    deer_caught: Estimate
    tigers_left: Estimate


@dataclass(frozen=True)
class AlgorithmHunt:
    """A group's mean over its checkpoints of their per-game means, with the t-interval over its
    checkpoints (``mean_over_checkpoints``)."""

    algorithm: str
    checkpoints: int
    games: int
    reward: Estimate
    deer_caught: Estimate


def summarise_groups(groups: dict[str, str], records: Sequence[HuntRecord]) -> list[AlgorithmHunt]:
    summaries = []
    for group, labels in members_of(groups).items():
        mine = [[r for r in records if r.model == label] for label in labels]
        summaries.append(AlgorithmHunt(
            algorithm=group, checkpoints=len(labels), games=sum(map(len, mine)),
            reward=mean_over_checkpoints([[r.reward for r in rs] for rs in mine]),
            deer_caught=mean_over_checkpoints([[r.deer_caught for r in rs] for rs in mine]),
        ))
    return summaries


def mean_over_checkpoints(values: Sequence[Sequence[float]]) -> Estimate:
    """The mean over checkpoints of their per-game means (``values[c]``: checkpoint c's games),
    with the 95% t-interval over the checkpoints (each a draw of its group's seeds; its mean
    carries its games' noise). One checkpoint gives no interval."""
    if not values or any(len(v) == 0 for v in values):
        raise ValueError("mean_over_checkpoints needs one checkpoint or more, each with games")
    means = [sum(v) / len(v) for v in values]
    return unit_interval(sum(means) / len(means), [[m / len(means) for m in means]])


def summarise(labels: Sequence[str], records: Sequence[HuntRecord]) -> list[HuntSummary]:
    summaries = []
    for label in labels:
        mine = [r for r in records if r.model == label]
        summaries.append(HuntSummary(
            model=label,
            games=len(mine),
            reward=mean_interval([r.reward for r in mine]),
            deer_caught=mean_interval([r.deer_caught for r in mine]),
            tigers_left=mean_interval([r.tigers_left for r in mine]),
        ))
    return summaries


def run_tiger_deer(
    paths: Sequence[str | Path], *, map_size: int, games: int, seed: int, out: str | Path,
    workers: int = 1, env_options: dict | None = None, group_by: str = "algo",
    address: str | None = None, at_once: int = GAMES_AT_ONCE,
) -> dict:
    """Evaluate each checkpoint for ``games`` games; write ``REPORT_FILES`` into ``out``, and
    ``ALGORITHM_FILES`` where the checkpoints form several groups by ``group_by``. The games run
    in ``workers`` processes, or on the Ray cluster at ``address``, each playing ``at_once``
    games at a time."""
    if games < 1:
        raise ValueError(f"games must be at least 1, got {games}")
    env_options = dict(env_options or {})
    labels = unique_labels(paths)
    groups = checkpoint_groups(paths, labels, group_by)
    spec = ArenaSpec(tuple(map(str, paths)), "tiger-deer", map_size, env_options)
    # Every model meets the same layouts and deer: the differences are the models'.
    schedule = [Game((m,), k, game_seed(seed, k)) for m in range(len(paths)) for k in range(games)]
    results = play_batches(spec, schedule, workers=workers, at_once=at_once, desc="tiger-deer",
                           address=address)
    records = [
        HuntRecord(
            model=labels[game.players[0]], game=game.index, seed=game.seed,
            reward=result.groups["tiger"].reward, deer_caught=result.deer_caught,
            tigers_left=result.groups["tiger"].survivors,
            deer_left=result.groups["deer"].survivors, steps=result.steps,
        )
        for game, result in zip(schedule, results, strict=True)
    ]
    summaries = summarise(labels, records)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    protocol = {"env": "tiger-deer", "map_size": map_size, "games_per_model": games,
                "seed": seed, **env_options}
    report = {
        "protocol": {**protocol,
                     "checkpoints": dict(zip(labels, map(str, paths), strict=True))},
        "models": summaries,
    }
    several = len(set(groups.values())) > 1
    if several:
        report["protocol"]["group_by"] = group_by
        algorithms = summarise_groups(groups, records)
        report["algorithms"] = {"members": members_of(groups), "summaries": algorithms}
        write_csv(out / "algorithms.csv", algorithms)
        plot_hunts([a.algorithm for a in algorithms], algorithms, out / "algorithm_scores.png",
                   title=f"tiger-deer, {map_size}² map: mean over seeds (95% t-intervals)")
    report["games"] = records
    write_json(out / "report.json", report)
    write_csv(out / "models.csv", summaries)
    write_csv(out / "games.csv", records)
    plot_hunts(labels, summaries, out / "scores.png",
               title=f"tiger-deer, {map_size}² map (95% intervals)")
    lines = ["# Tiger-deer evaluation", ""]
    lines += [f"- {key}: {value}" for key, value in protocol.items()]
    lines += [
        "",
        "Means per game ± the half-width of their 95% normal interval; the deer act at random.",
        "",
        "| model | games | tiger reward | deer caught | tigers left |",
        "|---|---:|---|---|---|",
    ]
    lines += [
        f"| {s.model} | {s.games} | {format_mean(s.reward)} | {format_mean(s.deer_caught)} "
        f"| {format_mean(s.tigers_left)} |"
        for s in summaries
    ]
    lines += ["", "![tiger reward and deer caught per game](scores.png)", ""]
    if several:
        lines += algorithm_section(algorithms, group_by)
    (out / "report.md").write_text("\n".join(lines))
    return report


def plot_hunts(names: Sequence[str], summaries, path: Path, title: str) -> None:
    """Bars of the tiger reward and deer caught of each summary (of a model or a group)."""
    plot_scores(names, {"tiger reward per game": [s.reward for s in summaries],
                        "deer caught per game": [s.deer_caught for s in summaries]},
                path, title=title)


def algorithm_section(algorithms: Sequence[AlgorithmHunt], group_by: str) -> list[str]:
    """The per-algorithm part of the report, as Markdown lines."""
    lines = [
        f"## Per algorithm (checkpoints grouped by {group_by})", "",
        "The mean over a group's checkpoints of their means per game, with the 95% t-interval "
        "over the checkpoints (none for a group of one).", "",
        "| group | checkpoints | games | tiger reward [95% CI] | deer caught [95% CI] |",
        "|---|---:|---:|---|---|",
    ]
    lines += [
        f"| {a.algorithm} | {a.checkpoints} | {a.games} | {format_rate(a.reward)} "
        f"| {format_rate(a.deer_caught)} |"
        for a in algorithms
    ]
    return lines + ["", "![per algorithm](algorithm_scores.png)", ""]
