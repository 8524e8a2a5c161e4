"""Training runs side by side in one process: each round, the games of every run play as one
batch (one ``Games`` of all their games, each network deciding for its own games in one
forward), then each run learns, logs and checkpoints in its own folder exactly as it would alone.

One process then steps one set of games and keeps one device busy with the games of several
runs (seeds, algorithms): what a GPU needs to be worth it for networks this small. The loop is
the trainer's (``trainer.run_rounds``); this module says which runs may share it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from cmfq.training.config import TrainConfig
from cmfq.training.trainer import run_rounds, start_or_resume

SHARED = ("env", "env_backend", "map_size", "max_steps", "games_per_round", "rounds", "device",
          "threads")
"""The fields that runs trained together share, with the env's options (``batch_settings``):
their games are one batch of one env, stepped round by round on one device, by one process's
threads. The others (seed, algorithm and its options, learning settings, opponent, ``out``) are
each run's own."""


def batch_settings(config: TrainConfig) -> dict:
    """What runs must have in common to train together: the ``SHARED`` fields and the env's
    options (``TrainConfig.env_options``)."""
    return {name: getattr(config, name) for name in dict.fromkeys(
        (*SHARED, *config.env_options()))}


def train_together(
    configs: Sequence[TrainConfig], *, progress: bool = True,
    on_checkpoint: Callable[[int], None] | None = None,
) -> list[Path]:
    """Train the runs of ``configs`` side by side, their games in one batch; returns their
    folders. Each run trains exactly as ``train`` (or ``resume``) would train it alone: the same
    metrics (but the speed) and weights.

    Each run goes on from what its folder holds (``trainer.start_or_resume``): a started run
    resumes from its last checkpoint to ``config.rounds`` (its saved settings must be
    ``config``'s), an empty folder gets a fresh run (a folder that holds a run without its config
    is refused, as ``train`` does). The runs must share their ``batch_settings`` and start at
    the same round; ValueError says which differ. ``on_checkpoint(rounds_done)`` is called after
    each round in which some run wrote its checkpoints. A run's ``steps_per_s`` counts its env
    steps over the time of the batch's round (so the runs' add up to the batch's)."""
    if not configs:
        raise ValueError("train_together needs at least one config")
    starts = [start_or_resume(config) for config in configs]
    _check_shared([start.config for start in starts])
    folders = [start.folder.path.resolve() for start in starts]
    twice = sorted({str(f) for f in folders if folders.count(f) > 1})
    if twice:
        raise ValueError(f"runs trained together need folders of their own; {twice} is given "
                         "to several")
    rounds = {start.round for start in starts}
    if len(rounds) > 1:
        where = ", ".join(f"{start.folder.path}: round {start.round}" for start in starts)
        raise ValueError(f"runs trained together go on from one round, these from several "
                         f"({where}); train them apart until they meet")
    return run_rounds(starts, progress=progress, on_checkpoint=on_checkpoint)


def _check_shared(configs: Sequence[TrainConfig]) -> None:
    """Raise ValueError naming the fields of ``batch_settings`` in which a config differs from
    the first."""
    first = batch_settings(configs[0])
    for config in configs[1:]:
        theirs = batch_settings(config)
        differ = [
            f"{name}: {first.get(name)!r} in {configs[0].out}, {theirs.get(name)!r} in "
            f"{config.out}"
            for name in dict.fromkeys((*first, *theirs)) if first.get(name) != theirs.get(name)
        ]
        if differ:
            raise ValueError("runs trained together share their games' batch, so they must "
                             f"share {', '.join(SHARED)} and the env's options; "
                             f"{'; '.join(differ)}")
