"""Cross-play cost: CPU time per tournament game at map 20 (16 agents a side, 400 steps), with
the games played one at a time (``--games-at-once 1``, how tournaments played before) and many
at once (each network one batched forward a step over the teams it plays in every game).

The players are an mfq and a cmfq checkpoint, untrained: a network's cost does not depend on its
weights, and untrained teams rarely kill, so every game lasts its 400 steps with all agents alive,
the most a game costs. Each case plays mirrored pairs of games (as a tournament does) in one
process on one torch thread, and records in ``extra_info`` the CPU time (user + system of this
process) per game and, after the one-at-a-time case, the ratio to it. CPU time, not wall time:
on a shared machine wall time measures the other jobs too.
"""

from __future__ import annotations

import time

import pytest

try:
    from cmfq.algos import make_algorithm
    from cmfq.envs import make_env
    from cmfq.evaluation.games import Game
    from cmfq.evaluation.match import Arena
    from cmfq.training.checkpoint import save_checkpoint
    from cmfq.training.config import TrainConfig
except ImportError as err:  # the kernel benchmarks stand alone
    pytest.skip(f"cmfq evaluation is not importable ({err})", allow_module_level=True)

MAP_SIZE = 20
AT_ONCE = (1, 8, 32)
"""Games a process plays at once; 1 is the one-at-a-time baseline."""
BASELINE_GAMES = 2
"""Games the one-at-a-time case plays (one mirrored pair); the others play ``at_once``."""

_cpu_per_game: dict[int, float] = {}


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


@pytest.mark.parametrize("at_once", AT_ONCE)
def test_crossplay_cpu_time_per_game(benchmark, device: str, arena: Arena, at_once: int) -> None:
    if device != "cpu":
        pytest.skip("cross-play runs on the CPU")
    games = _mirrored_pairs(BASELINE_GAMES if at_once == 1 else at_once)
    arena.play(_mirrored_pairs(at_once)[:2])  # one-off costs (first env, first forward)
    cpu: list[float] = []

    def play() -> list:
        start = time.process_time()
        results = [result for k in range(0, len(games), at_once)
                   for result in arena.play(games[k:k + at_once])]
        cpu.append((time.process_time() - start) / len(games))
        return results

    results = benchmark.pedantic(play, rounds=1, iterations=1)
    steps = [r.steps for r in results]
    _cpu_per_game[at_once] = cpu[0]
    benchmark.group = f"cpu cross-play, battle {MAP_SIZE}x{MAP_SIZE}"
    benchmark.extra_info.update(
        kind="crossplay",
        at_once=at_once,
        games=len(games),
        steps_per_game=sum(steps) / len(steps),
        cpu_s_per_game=cpu[0],
        ratio_to_one_at_a_time=_cpu_per_game[1] / cpu[0] if 1 in _cpu_per_game else None,
        setup={"map_size": MAP_SIZE, "players": "mfq, cmfq (untrained)", "threads": 1},
    )
    print(f"\n{at_once} at once: {cpu[0]:.3f} s CPU per game of {sum(steps) / len(steps):.0f} "
          f"steps")

