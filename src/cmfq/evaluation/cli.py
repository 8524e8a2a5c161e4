"""``cmfq tournament``, ``cmfq render`` and ``cmfq plot``."""

from __future__ import annotations

import argparse
import sys

from cmfq.envs import BACKENDS
from cmfq.envs.battle import LAYOUTS, BattleOptions
from cmfq.evaluation.curves import BANDS, DEFAULT_METRICS
from cmfq.evaluation.games import GAMES_AT_ONCE, default_workers
from cmfq.evaluation.tournament import PAIRS
from cmfq.training.config import RunOptions


def register(subparsers) -> None:
    """Add the evaluation subcommands to the top-level ``cmfq`` parser."""
    _tournament_parser(subparsers)
    _render_parser(subparsers)
    _plot_parser(subparsers)


def _env_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", choices=("battle", "tiger-deer"), default="battle",
                        help="environment (default: battle)")
    # cmfq train's default map (the shipped models' too): a model plays where it learned unless
    # told otherwise.
    map_size = RunOptions.map_size
    parser.add_argument("--map-size", type=int, default=map_size,
                        help="side of the square map, which may differ from training (default: "
                        f"{map_size}, as in cmfq train)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="steps per game at most (default: the env's: 400 in battle, "
                        "300 in tiger-deer)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the games (default: 0)")
    parser.add_argument("--layout", choices=LAYOUTS, default=BattleOptions.layout,
                        help="battle: where the armies start: fixed, the published layout in "
                        "every game; shifted, the blocks moved apart or together and up or down "
                        "by a draw from each game's seed, so a tournament's games start from "
                        "--games / 2 layouts, each played from both sides (default: "
                        f"{BattleOptions.layout})")
    parser.add_argument("--env-backend", choices=BACKENDS, default="magent2",
                        help="what plays the games: magent2 (the reference, default) or torch "
                        "(the same rules as tensors, its own random draws; not for render)")


PLAYERS_HELP = ("a checkpoint file (e.g. runs/*/last.pt), pretrained:NAME for a shipped model "
                "(cmfq.pretrained.names()) or random for a uniformly random team")


def _env_options(args: argparse.Namespace) -> dict:
    """The env options given; the defaults are left out (the published layout, the magent2
    backend), so that a report's settings say what they always said and its games are reused."""
    options = {} if args.max_steps is None else {"max_steps": args.max_steps}
    if args.layout != BattleOptions.layout:
        if args.env != "battle":
            raise ValueError(f"--layout is battle's; {args.env} has none")
        options["layout"] = args.layout
    return options | ({} if args.env_backend == "magent2" else {"env_backend": args.env_backend})


def _tournament_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "tournament",
        help="pairs of checkpoints fight; win rates with 95%% intervals, per checkpoint and "
        "per algorithm",
        description="battle: each pair of checkpoints (--pairs) plays --games games, swapping "
        "sides every game (mirrored pairs: two games from one seed); a game is won by the side "
        "with more survivors; the checkpoints are also grouped by algorithm and the groups "
        "compared over their seeds, with t-intervals (random apart). tiger-deer: each "
        "checkpoint hunts as the tigers for --games games. Writes JSON, CSV, a Markdown report "
        "and figures into --out.",
    )
    parser.add_argument("checkpoints", nargs="+",
                        help=f"players: each {PLAYERS_HELP}, or a sweep's summary.csv for the "
                        "last.pt of each of its runs")
    _env_arguments(parser)
    parser.add_argument("--games", type=int, default=50,
                        help="games per pair of checkpoints (battle: an even number, each seed "
                        "played from both sides) or per checkpoint (tiger-deer) (default: 50)")
    parser.add_argument("--rounds", type=int, dest="games", action=_Renamed, new="--games",
                        help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes (default: the number of CPUs)")
    parser.add_argument("--games-at-once", type=int, default=GAMES_AT_ONCE,
                        help="games each process plays at once, each network deciding for all "
                        f"of them in one batched forward a step (default: {GAMES_AT_ONCE})")
    parser.add_argument("--group-by", default="algo",
                        help="comma-separated config fields that group checkpoints for the "
                        "per-algorithm results, e.g. algo,weighting (default: algo)")
    parser.add_argument("--pairs", choices=PAIRS, default="all",
                        help="battle: which pairs play: all; between-groups (pairs within one "
                        "--group-by group, e.g. two seeds of one algorithm, are left out); or "
                        "seed-matched (each checkpoint meets the checkpoints of every other "
                        "group trained with its seed, read from its config, random meets each "
                        "checkpoint, and the groups are compared seed by seed; every group must "
                        "hold the same seeds) (default: all)")
    parser.add_argument("--address", default=None,
                        help="play the games on this Ray cluster instead (HOST:PORT, 'auto', or "
                        "'local' for a new local instance; see docs/sweeps.md)")
    parser.add_argument("--out", default="results/tournament",
                        help="report folder (default: results/tournament)")
    parser.add_argument("--fresh", action="store_true",
                        help="battle: play every game. By default the games that the report "
                        "already in --out holds between the same checkpoint files (same path, "
                        "same SHA-256) under the same env, map size, seed and env options are "
                        "kept and only the others are played, which gives the report a fresh "
                        "tournament would: adding players or games costs only the new games")
    parser.set_defaults(func=run_tournament_command)


def _render_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "render",
        help="replay one game as a GIF or MP4",
        description="Play one game and draw it: battle takes two players (red, blue; random "
        "for a random team), tiger-deer one (the tigers; the deer act at random). MP4 needs "
        "cmfq[video].",
    )
    parser.add_argument("checkpoints", nargs="+",
                        help=f"one player per team, in team order: {PLAYERS_HELP}")
    _env_arguments(parser)
    parser.add_argument("--out", default="replay.gif",
                        help="a .gif or .mp4 file (default: replay.gif)")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second (default: 10)")
    parser.add_argument("--cell", type=int, default=12, help="pixels per map cell (default: 12)")
    parser.set_defaults(func=run_render_command)


def _plot_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="learning curves of training runs",
        description="Plot the runs' metrics.csv logs: one line per group of runs (by default "
        "the runs of one algorithm), their mean over seeds with a band where a group has several "
        "runs: the 95% t interval of the mean (--band ci) or ± one standard deviation (std).",
    )
    parser.add_argument("runs", nargs="+",
                        help="run folders (or their metrics.csv files), or a sweep's summary.csv")
    parser.add_argument("--out", default="results/curves.png",
                        help="PNG file (default: results/curves.png)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help="comma-separated metrics.csv columns, one panel each "
                        f"(default: {','.join(DEFAULT_METRICS)}; win is plotted as a win rate)")
    parser.add_argument("--group-by", default="algo",
                        help="comma-separated config keys that define a group, or 'run' for one "
                        "line per run (default: algo)")
    parser.add_argument("--smooth", type=int, default=10,
                        help="moving-average window in rounds (default: 10)")
    parser.add_argument("--band", choices=BANDS, default="ci",
                        help="ci: 95%% t interval of the mean over seeds; std: ± one standard "
                        "deviation (default: ci)")
    parser.set_defaults(func=run_plot_command)


class _Renamed(argparse.Action):
    """An option's old name: still works, with a one-line deprecation message."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"cmfq: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _fail(command: str, err: Exception) -> int:
    print(f"cmfq {command}: error: {err}", file=sys.stderr)
    return 2


def run_tournament_command(args: argparse.Namespace) -> int:
    from cmfq.evaluation.tiger_deer import run_tiger_deer
    from cmfq.evaluation.tournament import Settings, run_tournament
    from cmfq.training.run_folder import LAST_FILE
    from cmfq.training.summary import expand_summaries

    checkpoints = expand_summaries(args.checkpoints, file=LAST_FILE)
    try:
        if args.env == "tiger-deer":
            run_tiger_deer(checkpoints, map_size=args.map_size, games=args.games,
                           seed=args.seed, out=args.out, workers=args.workers,
                           env_options=_env_options(args), group_by=args.group_by,
                           address=args.address, at_once=args.games_at_once)
        else:
            settings = Settings(env=args.env, map_size=args.map_size, games=args.games,
                                seed=args.seed, env_options=_env_options(args),
                                pairs=args.pairs)
            run_tournament(checkpoints, settings, args.out, workers=args.workers,
                           group_by=args.group_by, address=args.address,
                           at_once=args.games_at_once, reuse=not args.fresh)
    except (ValueError, FileNotFoundError, ImportError) as err:
        return _fail("tournament", err)
    print(f"report written to {args.out}/report.md")
    return 0


def run_render_command(args: argparse.Namespace) -> int:
    from cmfq.evaluation.render import render_game

    try:
        result = render_game(args.checkpoints, args.out, env=args.env, map_size=args.map_size,
                              seed=args.seed, fps=args.fps, cell=args.cell,
                              env_options=_env_options(args))
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        return _fail("render", err)
    survivors = ", ".join(f"{g}: {r.survivors}" for g, r in result.groups.items())
    print(f"{result.steps} steps ({survivors} left) written to {args.out}")
    return 0


def run_plot_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cmfq.evaluation.curves import load_runs, plot_curves
    from cmfq.training.summary import expand_summaries

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        runs = load_runs(expand_summaries(args.runs), group_by=args.group_by)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        plotted = plot_curves(runs, args.out, metrics=metrics, window=args.smooth,
                              band=args.band)
    except (ValueError, FileNotFoundError) as err:
        return _fail("plot", err)
    print(f"{', '.join(plotted)} of {len(runs)} runs plotted to {args.out}")
    return 0
