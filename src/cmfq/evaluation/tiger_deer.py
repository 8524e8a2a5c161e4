"""Tiger-deer evaluation: each checkpoint hunts as the tigers against random deer for the same
seeded rounds; the report gives per round the tigers' total reward and the deer caught."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cmfq.evaluation.figures import plot_scores
from cmfq.evaluation.games import ArenaSpec, Game, play_games, round_seed, unique_labels
from cmfq.evaluation.report import format_mean, write_csv, write_json
from cmfq.evaluation.stats import Estimate, mean_interval

REPORT_FILES = ("report.json", "models.csv", "rounds.csv", "report.md", "scores.png")


@dataclass(frozen=True)
class HuntRecord:
    """One round of one model as the tigers."""

    model: str
    round: int
    seed: int
    reward: float
    deer_caught: int
    tigers_left: int
    deer_left: int
    steps: int


@dataclass(frozen=True)
class HuntSummary:
    model: str
    rounds: int
    reward: Estimate
    deer_caught: Estimate
    tigers_left: Estimate


def summarise(labels: Sequence[str], records: Sequence[HuntRecord]) -> list[HuntSummary]:
    summaries = []
    for label in labels:
        mine = [r for r in records if r.model == label]
        summaries.append(HuntSummary(
            model=label,
            rounds=len(mine),
            reward=mean_interval([r.reward for r in mine]),
            deer_caught=mean_interval([r.deer_caught for r in mine]),
            tigers_left=mean_interval([r.tigers_left for r in mine]),
        ))
    return summaries


def run_tiger_deer(
    paths: Sequence[str | Path], *, map_size: int, rounds: int, seed: int, out: str | Path,
    workers: int = 1, env_options: dict | None = None, address: str | None = None,
) -> dict:
    """Evaluate each checkpoint for ``rounds`` rounds; write ``REPORT_FILES`` into ``out``. The
    rounds run in ``workers`` processes, or on the Ray cluster at ``address``."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    env_options = dict(env_options or {})
    labels = unique_labels(paths)
    spec = ArenaSpec(tuple(map(str, paths)), "tiger-deer", map_size, env_options)
    # Every model meets the same layouts and deer: the differences are the models'.
    games = [Game((m,), r, round_seed(seed, r)) for m in range(len(paths)) for r in range(rounds)]
    results = play_games(spec, games, workers, desc="tiger-deer", address=address)
    records = [
        HuntRecord(
            model=labels[game.players[0]], round=game.round, seed=game.seed,
            reward=result.groups["tiger"].reward, deer_caught=result.deer_caught,
            tigers_left=result.groups["tiger"].survivors,
            deer_left=result.groups["deer"].survivors, steps=result.steps,
        )
        for game, result in zip(games, results, strict=True)
    ]
    summaries = summarise(labels, records)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    protocol = {"env": "tiger-deer", "map_size": map_size, "rounds_per_model": rounds,
                "seed": seed, **env_options}
    report = {
        "protocol": {**protocol,
                     "checkpoints": dict(zip(labels, map(str, paths), strict=True))},
        "models": summaries,
        "rounds": records,
    }
    write_json(out / "report.json", report)
    write_csv(out / "models.csv", summaries)
    write_csv(out / "rounds.csv", records)
    plot_scores(
        labels,
        {"tiger reward per round": [s.reward for s in summaries],
         "deer caught per round": [s.deer_caught for s in summaries]},
        out / "scores.png", title=f"tiger-deer, {map_size}² map (95% intervals)",
    )
    lines = ["# Tiger-deer evaluation", ""]
    lines += [f"- {key}: {value}" for key, value in protocol.items()]
    lines += [
        "",
        "Means per round ± the half-width of their 95% normal interval; the deer act at random.",
        "",
        "| model | rounds | tiger reward | deer caught | tigers left |",
        "|---|---:|---|---|---|",
    ]
    lines += [
        f"| {s.model} | {s.rounds} | {format_mean(s.reward)} | {format_mean(s.deer_caught)} "
        f"| {format_mean(s.tigers_left)} |"
        for s in summaries
    ]
    lines += ["", "![tiger reward and deer caught per round](scores.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return report
