"""Playing many rounds at once, in-process, in worker processes or on Ray, with a progress bar.

Every round is fully determined by its ``Game`` (players, seed), so the results do not depend on
the number of workers nor on the order in which the rounds finish.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from cmfq.cluster import connect


@dataclass(frozen=True)
class Game:
    """One round: checkpoint ``players[g]`` acts for the env's group ``g``."""

    players: tuple[int, ...]
    round: int
    seed: int


@dataclass(frozen=True)
class ArenaSpec:
    """How to build the ``Arena`` the rounds are played in (sent to each worker)."""

    paths: tuple[str, ...]
    env: str
    map_size: int
    env_options: dict = field(default_factory=dict)

    def build(self):
        from cmfq.evaluation.match import Arena

        return Arena(self.paths, self.env, self.map_size, **self.env_options)


def round_seed(seed: int, index: int) -> int:
    """The environment seed of round (or mirrored pair of rounds) ``index`` of a run."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def default_workers() -> int:
    return os.cpu_count() or 1


# The arena of a worker process, built once by ``_init_worker`` and reused for all its rounds.
_ARENA = None


def _init_worker(spec: ArenaSpec) -> None:
    global _ARENA
    _ARENA = spec.build()


def _play(game: Game):
    return _ARENA.play(game.players, game.seed)


def play_games(
    spec: ArenaSpec, games: Sequence[Game], workers: int, desc: str = "rounds",
    address: str | None = None,
):
    """The ``RoundResult`` of each game, in the order of ``games``.

    The arena is built here first, so that a bad checkpoint or env fails fast with its own error.
    With ``address`` the rounds are played by Ray actors, one per CPU of that Ray instance or
    cluster (``cmfq.cluster.connect``; every node must see the checkpoints' paths).
    Otherwise, with ``workers > 1``, the rounds are shared among that many processes, started with
    'spawn' (safe with torch's threads, unlike fork).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    arena = spec.build()
    results = [None] * len(games)
    with tqdm(total=len(games), desc=desc, unit="round") as bar:
        if address is not None:
            for i, result in _play_on_ray(spec, games, address):
                results[i] = result
                bar.update()
            return results
        if workers == 1 or len(games) <= 1:
            for i, game in enumerate(games):
                results[i] = arena.play(game.players, game.seed)
                bar.update()
            return results
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            min(workers, len(games)), mp_context=context, initializer=_init_worker,
            initargs=(spec,),
        ) as pool:
            futures = {pool.submit(_play, game): i for i, game in enumerate(games)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    return results


class _ArenaActor:
    """A Ray actor holding one arena, built once and reused for all its rounds."""

    def __init__(self, spec: ArenaSpec) -> None:
        self.arena = spec.build()

    def play(self, index: int, game: Game):
        return index, self.arena.play(game.players, game.seed)


def _play_on_ray(spec: ArenaSpec, games: Sequence[Game], address: str):
    """(index, result) of each game as it finishes."""
    ray = connect(address)
    from ray.util import ActorPool

    cpus = int(ray.cluster_resources().get("CPU", 1))
    actor = ray.remote(num_cpus=1)(_ArenaActor)
    pool = ActorPool([actor.remote(spec) for _ in range(max(1, min(cpus, len(games))))])
    yield from pool.map_unordered(lambda a, item: a.play.remote(*item), enumerate(games))

