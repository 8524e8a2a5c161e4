"""End-to-end cost for a trainer: environment steps per second of ``cmfq train`` for il, mfq and
cmfq on a 40x40 battle (64 agents a side, self-play), on ``--device`` (cpu or cuda).

Each measurement is one short ``train`` call with the default update schedule (a round of a few
dozen steps; every step plays both teams, both teams' transitions feed the replay, and a round
makes 1 x its new transitions / 64 gradient steps of 64, about two per env step), so it includes
everything a real run does per step: the env, both teams' decisions (cmfq: the fused op for each,
on the device), replay and learning. ``benchmarks/compare_mfq_port.py`` sets these figures beside
a public port of the original MFQ code.

``test_lockstep_throughput`` sets ``--games-per-round 4`` (four battles a round, stepped in
lockstep) beside ``--games-per-round 1`` for mfq and cmfq, the two runs alternating so that a
shared machine's drift hits both alike; it records both rates and their ratio (the report leaves
it to the notes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cmfq.training.config import TrainConfig
from cmfq.training.metrics import read_metrics
from cmfq.training.run_folder import RunFolder
from cmfq.training.trainer import train

ALGOS = ("il", "mfq", "cmfq")
MAP_SIZE = 40
ROUNDS = 1
STEPS_PER_ROUND = 60
MEASUREMENTS = 3


def _config(
    algo: str, out: Path, rounds: int, steps: int, device: str, games: int = 1
) -> TrainConfig:
    return TrainConfig(
        games_per_round=games,
        algo=algo,
        device=device,
        env="battle",
        map_size=MAP_SIZE,
        rounds=rounds,
        max_steps=steps,
        save_every=rounds,
        seed=0,
        out=str(out),
    )


@pytest.mark.parametrize("algo", ALGOS)
def test_training_throughput(benchmark, device: str, tmp_path: Path, algo: str) -> None:
    runs = iter(range(1_000))

    def fresh_run() -> tuple[tuple, dict]:
        out = tmp_path / f"run{next(runs)}"
        return (_config(algo, out, ROUNDS, STEPS_PER_ROUND, device),), {"progress": False}

    # train sets torch's thread count to its config's (cmfq train's default); the kernel
    # benchmarks of the same session must keep the --threads they were asked for.
    threads = torch.get_num_threads()
    try:
        # A tiny run first, so that one-off costs (imports, magent2's first map) are not timed.
        train(_config(algo, tmp_path / "warmup", rounds=1, steps=2, device=device),
              progress=False)
        run_dir = benchmark.pedantic(train, setup=fresh_run, rounds=MEASUREMENTS, iterations=1)
    finally:
        torch.set_num_threads(threads)
    rows = read_metrics(RunFolder(run_dir).metrics_file)
    benchmark.group = f"{device} training 40x40 battle"
    benchmark.extra_info.update(
        kind="training",
        algo=algo,
        env_steps=int(sum(row["steps"] for row in rows)),
        seconds_in_rounds=sum(row["steps"] / row["steps_per_s"] for row in rows),
        setup={
            "map_size": MAP_SIZE,
            "rounds": ROUNDS,
            "max_steps": STEPS_PER_ROUND,
            "updates": "1 x both sides' new transitions / 64, batches of 64",
            "opponent": "self",
            "device": device,
            "threads": _config(algo, tmp_path, ROUNDS, STEPS_PER_ROUND, device).threads,
        },
    )


def _steps_per_second(run_dir: Path) -> float:
    """Env steps (summed over a round's games) per second spent in the run's rounds."""
    rows = read_metrics(RunFolder(run_dir).metrics_file)
    seconds = sum(row["steps"] / row["steps_per_s"] for row in rows)
    return sum(row["steps"] for row in rows) / seconds


@pytest.mark.parametrize("algo", ("mfq", "cmfq"))
def test_lockstep_throughput(benchmark, device: str, tmp_path: Path, algo: str) -> None:
    rates: dict[int, list[float]] = {1: [], 4: []}
    runs = iter(range(1_000))

    def both() -> None:
        for games in rates:
            config = _config(algo, tmp_path / f"run{next(runs)}", ROUNDS, STEPS_PER_ROUND, device,
                             games=games)
            rates[games].append(_steps_per_second(train(config, progress=False)))

    threads = torch.get_num_threads()
    try:
        train(_config(algo, tmp_path / "warmup", rounds=1, steps=2, device=device, games=4),
              progress=False)
        benchmark.pedantic(both, rounds=MEASUREMENTS, iterations=1)
    finally:
        torch.set_num_threads(threads)
    median = {games: float(np.median(r)) for games, r in rates.items()}
    benchmark.group = f"{device} lockstep training 40x40 battle"
    benchmark.extra_info.update(
        kind="lockstep",
        algo=algo,
        steps_per_s={str(games): rate for games, rate in median.items()},
        ratio=median[4] / median[1],
        setup={"map_size": MAP_SIZE, "max_steps": STEPS_PER_ROUND, "games": [1, 4],
               "device": device, "threads": 1},
    )
    print(f"\n{algo}: env steps/s {median[1]:.1f} (--games-per-round 1), "
          f"{median[4]:.1f} (--games-per-round 4), "
          f"ratio {median[4] / median[1]:.2f}; all: {rates}")


@pytest.mark.parametrize(
    ("algo", "games", "graph_step"),
    [(algo, games, graph) for algo in ("mfq", "cmfq") for games, graph in
     ((1, False), (1, True), (8, True))],
)
def test_device_step_throughput(
    benchmark, device: str, tmp_path: Path, algo: str, games: int, graph_step: bool
) -> None:
    """A GPU's figure: the second round's env steps/s (the first captures the step and warms the
    device), two rounds of 100 steps a game, the eager device step or the CUDA graph."""
    if device != "cuda":
        pytest.skip("the device step (the replay sampled on the device, a CUDA graph): cuda only")

    def run() -> Path:
        config = _config(algo, tmp_path / "run", rounds=2, steps=100, device=device, games=games)
        config.graph_step = graph_step
        return train(config, progress=False)

    run_dir = benchmark.pedantic(run, rounds=1, iterations=1)
    rows = read_metrics(RunFolder(run_dir).metrics_file)
    benchmark.group = f"{device} training step 40x40 battle"
    benchmark.extra_info.update(
        kind="device_training",
        algo=algo,
        games=games,
        graph_step=graph_step,
        steps_per_s=rows[1]["steps_per_s"],
        first_round_steps_per_s=rows[0]["steps_per_s"],
        updates=int(rows[1]["updates"]),
        setup={"map_size": MAP_SIZE, "max_steps": 100, "rounds": 2, "device": device,
               "threads": 1, "updates": "default schedule (2 steps of 64 per env step)"},
    )
    print(f"\n{algo} --games-per-round {games} graph_step={graph_step}: "
          f"{rows[1]['steps_per_s']:.1f} env steps/s in round 2 "
          f"({rows[0]['steps_per_s']:.1f} in round 1)")
