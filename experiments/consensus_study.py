"""The consensus study: where the neighbours carry what the best action needs, do the networks
learn to use them, and does the causal weighting help? Trains ``SEEDS`` seeds of each of
``VARIANTS`` on the consensus game (experiments/consensus/base.toml) and writes
docs/results/consensus.md (linked from docs/results.md) with its learning curves:

    python experiments/consensus_study.py               # train what is missing, then the page
    python experiments/consensus_study.py --workers 2   # runs trained side by side
    python experiments/consensus_study.py --report      # the page only, from the committed runs

A run lives in experiments/runs/consensus/VARIANT,seed=N/; a finished run (all its rounds in
its metrics.csv) is skipped, an unfinished one trained again from scratch (a run takes under a
minute). Its ``config.toml`` and ``metrics.csv`` are committed, not its checkpoints.

What is compared, per run: the return (the mean reward per agent and game over the last
``LAST`` rounds, at the final exploration temperature 0.1), the neighbour sensitivity and its
floor, and CMFQ's weight diagnostics over the same rounds. Per variant: the mean over seeds with
its 95% t interval; between variants: the paired differences (the same seed gives the same
initial weights, the same games and the same acting seeds to every variant), with their t
interval. Only the package's public modules are used.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cmfq.envs import ConsensusGames, neighborhoods
from cmfq.envs.consensus import follow_the_neighbours
from cmfq.evaluation.curves import load_runs, plot_curves
from cmfq.evaluation.stats import t_quantile_975
from cmfq.training.config import TrainConfig
from cmfq.training.metrics import read_metrics
from cmfq.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "experiments" / "consensus" / "base.toml"
RUNS = ROOT / "experiments" / "runs" / "consensus"
PAGE = ROOT / "docs" / "results" / "consensus.md"
FIGURE = ROOT / "docs" / "results" / "figures" / "curves-consensus.png"
SEEDS = range(10)
LAST = 10
"""Rounds at the end over which a run's return and measures are averaged."""

VARIANTS = {
    "il": {"algo": "il"},
    "mfq": {"algo": "mfq"},
    "cmfq": {"algo": "cmfq"},  # the paper's: proportional weights of the effects
    "cmfq-relative": {"algo": "cmfq", "weighting": "relative"},
    "control": {"algo": "cmfq", "weighting": "relative", "weight_scores": "distance"},
}
"""The variants by name: their options over the base config."""

DESCRIPTIONS = {
    "il": "independent Q-learning: no neighbour input",
    "mfq": "MFQ: the plain mean action ā",
    "cmfq": "CMFQ as the paper specifies: w ∝ c_ik (proportional)",
    "cmfq-relative": "CMFQ, scale-free: w = softmax(c_ik / mean_k c_ik), fallback below 0.01 nats",
    "control": "the non-causal control of cmfq-relative: ‖e(a_k) − ā‖² in place of c_ik, no Q",
}

PAIRS = (("mfq", "il"), ("cmfq", "mfq"), ("cmfq-relative", "mfq"), ("cmfq-relative", "cmfq"),
         ("cmfq-relative", "control"), ("control", "mfq"))
"""The paired comparisons on the page: (a, b) reads "a minus b"."""

CONCLUSION_MARK = "<!-- conclusion: written by hand, kept when the page is regenerated -->"


def run_dir(variant: str, seed: int) -> Path:
    return RUNS / f"{variant},seed={seed}"


def config_of(variant: str, seed: int) -> TrainConfig:
    base = TrainConfig.from_toml(BASE).to_dict()
    return TrainConfig.from_dict(
        base | VARIANTS[variant] | {"seed": seed, "out": str(run_dir(variant, seed))})


def finished(variant: str, seed: int) -> bool:
    metrics = run_dir(variant, seed) / "metrics.csv"
    rounds = config_of(variant, seed).rounds
    return metrics.is_file() and len(read_metrics(metrics)) == rounds


def train_one(variant: str, seed: int) -> str:
    folder = run_dir(variant, seed)
    for leftover in sorted(folder.rglob("*"), reverse=True) if folder.exists() else ():
        leftover.unlink() if leftover.is_file() else leftover.rmdir()
    train(config_of(variant, seed), progress=False)
    return f"{variant},seed={seed}"


def train_missing(workers: int) -> None:
    todo = [(v, s) for s in SEEDS for v in VARIANTS if not finished(v, s)]
    print(f"{len(todo)} runs to train", flush=True)
    with ProcessPoolExecutor(workers) as pool:
        for done in pool.map(train_one, *zip(*todo, strict=True)) if todo else ():
            print("finished", done, flush=True)


def run_summary(variant: str, seed: int) -> dict[str, float]:
    """A run's means over its last ``LAST`` rounds, and the change of its return over them
    (the last ``LAST`` rounds' mean minus the ``LAST`` before)."""
    rows = read_metrics(run_dir(variant, seed) / "metrics.csv")
    last, before = rows[-LAST:], rows[-2 * LAST : -LAST]
    out = {k: float(np.mean([r[k] for r in last])) for k in (
        "reward", "sensitivity", "sensitivity_floor", "sensitivity_swap",
        "sensitivity_swap_floor", "effect_sum", "weight_entropy", "mean_shift",
        "uniform_fallback")}
    out["flattening"] = out["reward"] - float(np.mean([r["reward"] for r in before]))
    return out


def t_interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t interval of the mean of ``values``."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    half = t_quantile_975(len(values) - 1) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def fmt(interval: tuple[float, float, float], digits: int = 2) -> str:
    mean, low, high = interval
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def sci(interval: tuple[float, float, float]) -> str:
    mean, low, high = interval
    return f"{mean:.2g} [{low:.2g}, {high:.2g}]"


def known_answers(config: TrainConfig) -> dict[str, float]:
    """The return of a game's ``max_steps`` steps: ignoring the neighbours at best, following
    their last majority (simulated over 1024 games), and knowing the target."""
    options = {k: getattr(config, k) for k in ("consensus_actions", "informed_share",
                                               "target_switch")}
    games = ConsensusGames(config.map_size, games=1024, **options)
    radius = config.radius or 2.0  # the env's view radius, the default neighbourhood
    neighbors = torch.from_numpy(neighborhoods(games.positions.numpy(), radius=radius,
                                               k_max=config.k_max))
    rule = follow_the_neighbours(games, neighbors, config.max_steps, seed=12345)
    return {
        "ignoring the neighbours (IL's best)": games.ignoring_the_neighbours() * config.max_steps,
        "following the neighbours' last majority": float(rule.sum(0).mean()),
        "knowing the target": float(config.max_steps),
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
            f"torch {torch.__version__}, {platform.system()} {platform.release()}")


def report(command: str) -> None:
    config = config_of("mfq", 0)
    summaries = {v: [run_summary(v, s) for s in SEEDS] for v in VARIANTS}
    seeds = len(SEEDS)
    lines = [
        "# Where the neighbours matter: the consensus game",
        "",
        "Regenerated by `python experiments/consensus_study.py` (the runs' configs and metrics are "
        "in `experiments/runs/consensus/`). The game (`cmfq.envs.consensus`): one agent on "
        f"every cell of a {config.map_size}x{config.map_size} lattice, {config.consensus_actions} "
        "actions, a hidden target action per game that every agent is paid 1 a step for "
        f"playing; {config.informed_share:.0%} of the agents see it, the others only see what "
        f"their neighbours (within 2 cells) did at the last step; after each step the target "
        f"changes with probability {config.target_switch}. {config.max_steps} steps a game, "
        f"{config.rounds} rounds of {config.games_per_round} games, learning rate {config.lr}, the "
        "exploration temperature from 1 to 0.1 over 80% of the rounds; everything else the "
        "training defaults (`experiments/consensus/base.toml`).",
        "",
        f"{seeds} seeds of each variant; a variant's runs with one seed start from the same "
        "weights and play the same games with the same acting seeds, so the comparisons "
        "between variants are paired. A run's **return** is the mean reward per agent and "
        f"game over its last {LAST} rounds ({LAST * config.games_per_round} games at "
        "temperature 0.1); "
        "its **sensitivity** the mean KL between π(·|s, x) and π(·|s, uniform) at τ = 0.1 "
        "over the same rounds (docs/training.md, Metrics), beside its **floor**, the same "
        "measure of the run's initial network. Intervals: 95% t intervals over the seeds "
        "(of the mean, or of the paired differences).",
        "",
        "## Known answers",
        "",
        "| policy | return (of 25) |",
        "|---|---|",
        *(f"| {name} | {value:.2f} |" for name, value in known_answers(config).items()),
        "",
        "## Returns and sensitivity",
        "",
        "| variant | what | return | sensitivity | floor | sensitivity / floor | swap sensitivity "
        "| summed effect (nats) | weight entropy | mean shift ‖ǎ − ā‖₁ | uniform fallback |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v, rows in summaries.items():
        col = {k: [r[k] for r in rows] for k in rows[0]}
        ratio = [s / f for s, f in zip(col["sensitivity"], col["sensitivity_floor"], strict=True)]
        diag = [sci(t_interval(col[k])) if not any(map(math.isnan, col[k])) else "–"
                for k in ("effect_sum", "weight_entropy", "mean_shift", "uniform_fallback")]
        lines.append(
            f"| {v} | {DESCRIPTIONS[v]} | {fmt(t_interval(col['reward']))} | "
            f"{sci(t_interval(col['sensitivity']))} | {sci(t_interval(col['sensitivity_floor']))}"
            f" | {np.median(ratio):.3g} (median) | {sci(t_interval(col['sensitivity_swap']))} | "
            + " | ".join(diag) + " |")
    lines += [
        "",
        "CMFQ's summed effect, median over seeds: "
        + ", ".join(f"{v} {np.median([r['effect_sum'] for r in summaries[v]]):.3g} nats"
                    for v in ("cmfq", "cmfq-relative", "control")) + ".",
        "",
        "## Paired differences of the return",
        "",
        "| a − b | mean [95% t interval] | seeds a wins |",
        "|---|---|---|",
    ]
    for a, b in PAIRS:
        diff = [x["reward"] - y["reward"] for x, y in zip(summaries[a], summaries[b], strict=True)]
        lines.append(f"| {a} − {b} | {fmt(t_interval(diff))} | {sum(d > 0 for d in diff)} of "
                     f"{seeds} |")
    flat = {v: t_interval([r["flattening"] for r in rows]) for v, rows in summaries.items()}
    lines += [
        "",
        f"**Has the return flattened?** The criterion: the mean return of the last {LAST} rounds "
        f"minus that of the {LAST} before, whose t interval should hold 0 or be small beside the "
        "gaps above: " + "; ".join(f"{v} {fmt(i)}" for v, i in flat.items()) + ".",
        "",
        "![learning curves](figures/curves-consensus.png)",
        "",
        "Learning curves (mean over seeds, 95% t interval; the sensitivity panels' dashed lines "
        "are the floors).",
        "",
        "## How these figures were made",
        "",
        "The runs were trained with `python experiments/consensus_study.py --workers 2` (two "
        "runs side by side, one torch thread each, on 2 cores shared with other work: about a "
        f"minute a run); this page was written by `{command}` on {machine()}.",
        "",
        "## Conclusion",
        "",
        CONCLUSION_MARK,
    ]
    kept = ""
    if PAGE.is_file() and CONCLUSION_MARK in PAGE.read_text():
        kept = PAGE.read_text().split(CONCLUSION_MARK, 1)[1]
    PAGE.write_text("\n".join(lines) + (kept or "\n"))
    runs = load_runs([run_dir(v, s) for v in VARIANTS for s in SEEDS], group_by="run")
    for run in runs:  # group by variant, which the folder's name holds
        run.group = re.sub(r",seed=\d+$", "", run.name)
    plot_curves(runs, FIGURE, metrics=("reward", "sensitivity", "effect_sum"), window=3)
    print(f"wrote {PAGE.relative_to(ROOT)} and {FIGURE.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="runs trained side by side")
    parser.add_argument("--report", action="store_true", help="write the page only")
    args = parser.parse_args()
    if not args.report:
        train_missing(args.workers)
    report("python " + " ".join([Path(sys.argv[0]).relative_to(ROOT).as_posix()
                                 if Path(sys.argv[0]).is_absolute() else sys.argv[0],
                                 *sys.argv[1:]]))


if __name__ == "__main__":
    main()
