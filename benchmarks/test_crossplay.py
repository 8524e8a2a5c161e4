"""Cross-play cost: CPU time per tournament game at map 20 (16 agents a side, 400 steps), with
the games played one at a time (``--games-at-once 1``, how tournaments played before) and many
at once (each network one batched forward a step over the teams it plays in every game).

The players are an mfq and a cmfq checkpoint, untrained: a network's cost does not depend on its
weights, and untrained teams rarely kill, so every game lasts its 400 steps with all agents alive,
the most a game costs. Each case plays mirrored pairs of games (as a tournament does) in one
process on one torch thread, one at a time and then at once, alternating, and records in
``extra_info`` the CPU time (user + system of this process) per game of both and the ratio of
their medians. CPU time, not wall time: on a shared machine wall time measures the other jobs
too.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from cmfq.algos import make_algorithm
from cmfq.envs import make_env
from cmfq.evaluation.match import Arena, Game
from cmfq.training.checkpoint import save_checkpoint
from cmfq.training.config import TrainConfig

MAP_SIZE = 20
AT_ONCE = (8, 32)
"""Games a process plays at once, each set beside one at a time."""
BASELINE_GAMES = 2
"""Games played one at a time per measurement (one mirrored pair)."""
MEASUREMENTS = 2


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Arena:
    root = tmp_path_factory.mktemp("crossplay")
    env = make_env("battle", MAP_SIZE, seed=0)
    paths = []
    for seed, algo in enumerate(("mfq", "cmfq")):
        config = TrainConfig(algo=algo, map_size=MAP_SIZE, seed=seed)
        learner = make_algorithm(algo, env.specs["red"], **config.algo_options())
        path = root / f"{algo}.pt"
        save_checkpoint(path, learner, config, group="red", round_index=0)
        paths.append(path)
    return Arena(paths, "battle", MAP_SIZE)


def _mirrored_pairs(n: int) -> list[Game]:
    return [Game((0, 1) if k % 2 == 0 else (1, 0), k, 1000 + k // 2) for k in range(n)]


def _cpu_per_game(arena: Arena, games: list[Game], at_once: int) -> tuple[float, list[int]]:
    """CPU seconds per game of playing ``games``, ``at_once`` at a time, and their steps."""
    start = time.process_time()
    results = [result for k in range(0, len(games), at_once)
               for result in arena.play(games[k:k + at_once])]
    return (time.process_time() - start) / len(games), [r.steps for r in results]


@pytest.mark.parametrize("at_once", AT_ONCE)
def test_crossplay_cpu_time_per_game(benchmark, device: str, arena: Arena, at_once: int) -> None:
    if device != "cpu":
        pytest.skip("cross-play runs on the CPU")
    arena.play(_mirrored_pairs(2))  # one-off costs (first env, first forward)
    cpu: dict[int, list[float]] = {1: [], at_once: []}
    steps: list[int] = []

    def both() -> None:
        # One at a time, then at once, alternating, so that a shared machine's drift hits both.
        for n, games in ((1, _mirrored_pairs(BASELINE_GAMES)), (at_once, _mirrored_pairs(at_once))):
            seconds, played = _cpu_per_game(arena, games, n)
            cpu[n].append(seconds)
            steps.extend(played)

    benchmark.pedantic(both, rounds=MEASUREMENTS, iterations=1)
    median = {n: float(np.median(s)) for n, s in cpu.items()}
    benchmark.group = f"cpu cross-play, battle {MAP_SIZE}x{MAP_SIZE}"
    benchmark.extra_info.update(
        kind="crossplay",
        at_once=at_once,
        cpu_s_per_game={str(n): s for n, s in cpu.items()},
        ratio=median[1] / median[at_once],
        steps_per_game=sum(steps) / len(steps),
        setup={"map_size": MAP_SIZE, "players": "mfq, cmfq (untrained)", "threads": 1,
               "games": {"1": BASELINE_GAMES, str(at_once): at_once}},
    )
    print(f"\n{at_once} at once: CPU s per game {median[at_once]:.3f} vs {median[1]:.3f} one at a "
          f"time: {median[1] / median[at_once]:.2f}x; all: {cpu}")
