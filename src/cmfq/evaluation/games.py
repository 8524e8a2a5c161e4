"""Playing the games of an evaluation: many at once in one process, in worker processes or on
Ray, with a progress bar.

Every game is fully determined by its ``Game`` (players, seed), so the results do not depend on
how many games play at once, on the number of workers, nor on the order in which games finish.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
from tqdm import tqdm

from cmfq.cluster import connect
from cmfq.evaluation.match import Arena, ArenaSpec, Game

GAMES_AT_ONCE = 32
"""Games a process plays at once by default: at map 20, 2.4x less CPU time per game than one at
a time, against 2.0x at 8 (docs/performance.md); a batch's memory stays a few tens of MB."""


def game_seed(seed: int, index: int) -> int:
    """The environment seed of game (or mirrored pair of games) ``index`` of an evaluation."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def default_workers() -> int:
    return os.cpu_count() or 1


# The arena of a worker process, built once by ``_init_worker`` and reused for all its games.
_ARENA = None


def _init_worker(spec: ArenaSpec) -> None:
    global _ARENA
    _ARENA = spec.build()


def _play_batch(batch: Sequence[Game]):
    return _ARENA.play(batch)


def play_batches(
    spec: ArenaSpec, games: Sequence[Game], *, workers: int = 1,
    at_once: int = GAMES_AT_ONCE, desc: str = "games", address: str | None = None,
    arena: Arena | None = None,
):
    """The ``GameResult`` of each game, in the order of ``games``, played ``at_once`` at a time
    (``Arena.play``).

    The arena is built here first (unless the caller built it from ``spec`` already: ``arena``),
    so that a bad checkpoint or env fails fast with its own error.
    With ``address`` the batches are played by Ray actors, one per CPU of that Ray instance or
    cluster (``cmfq.cluster.connect``; every node must see the checkpoints' paths).
    Otherwise, with ``workers > 1``, the batches are shared among that many processes, started
    with 'spawn' (safe with torch's threads, unlike fork).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if at_once < 1:
        raise ValueError(f"games at once must be at least 1, got {at_once}")
    arena = spec.build() if arena is None else arena
    ray = None if address is None else connect(address)
    parallel = workers if ray is None else int(ray.cluster_resources().get("CPU", 1))
    batches = _batches(len(games), at_once, parallel)
    results = [None] * len(games)
    with tqdm(total=len(games), desc=desc, unit="game") as bar:
        if ray is not None:
            finished = _play_on_ray(ray, spec, games, batches, parallel)
        elif workers == 1 or len(batches) <= 1:
            finished = ((rows, arena.play([games[i] for i in rows])) for rows in batches)
        else:
            finished = _play_in_processes(spec, games, batches, workers)
        for rows, batch_results in finished:
            for i, result in zip(rows, batch_results, strict=True):
                results[i] = result
            bar.update(len(rows))
    return results


def _batches(n_games: int, at_once: int, workers: int) -> list[range]:
    """Consecutive index ranges of at most ``at_once`` games, and at least one per worker where
    there are enough games, so that no worker idles."""
    size = max(1, min(at_once, -(-n_games // workers)))
    return [range(start, min(start + size, n_games)) for start in range(0, n_games, size)]


def _play_in_processes(
    spec: ArenaSpec, games: Sequence[Game], batches: list[range], workers: int,
) -> Iterator[tuple[range, list]]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        min(workers, len(batches)), mp_context=context, initializer=_init_worker,
        initargs=(spec,),
    ) as pool:
        futures = {pool.submit(_play_batch, [games[i] for i in rows]): rows for rows in batches}
        for future in as_completed(futures):
            yield futures[future], future.result()


class _ArenaActor:
    """A Ray actor holding one arena, built once and reused for all its batches."""

    def __init__(self, spec: ArenaSpec) -> None:
        self.arena = spec.build()

    def play(self, rows: range, batch: list[Game]):
        return rows, self.arena.play(batch)


def _play_on_ray(
    ray, spec: ArenaSpec, games: Sequence[Game], batches: list[range], cpus: int,
) -> Iterator[tuple[range, list]]:
    """(rows, results) of each batch as it finishes, one actor per CPU."""
    from ray.util import ActorPool

    actor = ray.remote(num_cpus=1)(_ArenaActor)
    pool = ActorPool([actor.remote(spec) for _ in range(max(1, min(cpus, len(batches))))])
    yield from pool.map_unordered(
        lambda a, rows: a.play.remote(rows, [games[i] for i in rows]), batches
    )
