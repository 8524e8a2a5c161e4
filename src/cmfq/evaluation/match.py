"""Checkpoints playing rounds: the bridge between the evaluation tools and ``cmfq.training``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from cmfq.algos import RandomPolicy
from cmfq.envs import GridEnv, make_env
from cmfq.evaluation.players import RANDOM
from cmfq.training.checkpoint import Checkpoint, load_checkpoint
from cmfq.training.rollout import RoundResult, play_round


def policy_seed(seed: int, group_index: int) -> int:
    """The action-sampling seed of the team playing group ``group_index`` in a round."""
    return int(np.random.SeedSequence([seed, group_index]).generate_state(1)[0])


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one thread inside the block. A team's batches are small: more threads cost
    more in synchronisation than they gain, and ten times more when other processes share the
    cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Arena:
    """An environment and a set of players (checkpoints, ``pretrained:NAME`` or ``random``) that
    play rounds in it.

    ``play(players, seed)`` lets checkpoint ``players[g]`` act for the env's group ``g``; groups
    beyond ``players`` act at random (the deer of tiger-deer). A round depends only on the players,
    their order and ``seed``: the env is reset with it and each team samples its actions from its
    own generator seeded from it. The env takes the checkpoints' settings (minimap, id embedding,
    rewards) unless ``env_options`` override them.
    """

    def __init__(
        self, paths: Sequence[str | Path], env: str, map_size: int, **env_options,
    ) -> None:
        # None stands for the random team.
        self.checkpoints: list[Checkpoint | None] = [
            None if p == RANDOM else load_checkpoint(p) for p in paths
        ]
        trained = [c for c in self.checkpoints if c is not None]
        settings = shared_env_settings(trained, env)
        self.env: GridEnv = make_env(env, map_size, seed=0, **(settings | env_options))
        for checkpoint in self.checkpoints:
            if checkpoint is not None:
                checkpoint.check_fits(self.env)

    def play(
        self, players: Sequence[int], seed: int,
        on_step: Callable[[GridEnv, int], None] | None = None,
    ) -> RoundResult:
        if len(players) > len(self.env.groups):
            raise ValueError(f"{len(players)} players for the groups {self.env.groups}")
        policies = {
            group: self._policy(group, self.checkpoints[index], policy_seed(seed, g))
            for g, (group, index) in enumerate(zip(self.env.groups, players, strict=False))
        }
        with single_threaded():
            return play_round(self.env, policies, seed=seed, on_step=on_step)

    def _policy(self, group: str, checkpoint: Checkpoint | None, seed: int):
        if checkpoint is None:
            return RandomPolicy(self.env.specs[group].n_actions, seed=seed)
        return checkpoint.policy(seed=seed)


def shared_env_settings(checkpoints: list[Checkpoint], env: str) -> dict:
    """The env settings (minimap, id embedding, rewards) that ``checkpoints`` of ``env`` were
    trained with, so that an evaluation plays them in the game they learned. Checkpoints of other
    envs are skipped (the caller refuses them); differing settings are a ValueError: one env
    cannot show them both what they were trained on."""
    settings: dict = {}
    for checkpoint in checkpoints:
        if checkpoint.env != env:
            continue
        mine = checkpoint.env_settings()
        if settings and mine != settings:
            raise ValueError(
                f"{checkpoint.path} was trained with env settings {mine}, others with {settings}; "
                "evaluate checkpoints of one setting together"
            )
        settings = mine
    return settings
