"""Checkpoints playing games: the bridge between the evaluation tools and ``cmfq.training``.

A ``Game`` names its players and seed; an ``Arena`` (built from an ``ArenaSpec`` in each worker)
plays batches of them. ``games`` schedules the batches on processes or Ray and imports this
module, never the reverse."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cmfq.algos import RandomPolicy
from cmfq.envs import EnvGames, Games, GridEnv, make_games
from cmfq.evaluation.players import RANDOM
from cmfq.training.checkpoint import Checkpoint, load_checkpoint
from cmfq.training.rollout import GameResult, TeamPolicy, play_games


@dataclass(frozen=True)
class Game:
    """One game: checkpoint ``players[g]`` acts for the env's group ``g``."""

    players: tuple[int, ...]
    index: int
    """Its number among the games of its pair (tournament) or of its model (tiger-deer)."""
    seed: int


def policy_seed(seed: int, group_index: int) -> int:
    """The action-sampling seed of the team playing group ``group_index`` in a game."""
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
    play games in it.

    In a ``Game``, checkpoint ``players[g]`` acts for the env's group ``g``; groups beyond
    ``players`` act at random (the deer of tiger-deer). A game depends only on the players,
    their order and its seed: the env is reset with it and each team samples its actions from its
    own generator seeded from it, so a game plays the same alone or among others. The env takes
    the checkpoints' settings (minimap, id embedding, rewards) unless ``env_options`` override
    them; ``env_backend`` plays it on magent2 (the reference) or as torch games
    (``cmfq.envs.make_games``).
    """

    def __init__(
        self, paths: Sequence[str | Path], env: str, map_size: int, *,
        env_backend: str = "magent2", **env_options,
    ) -> None:
        # None stands for the random team.
        self.checkpoints: list[Checkpoint | None] = [
            None if p == RANDOM else load_checkpoint(p) for p in paths
        ]
        trained = [c for c in self.checkpoints if c is not None]
        self.env_backend = env_backend
        self._make_games = partial(make_games, env, map_size, backend=env_backend, seed=0,
                                   **(shared_env_settings(trained, env) | env_options))
        self.env: Games = self._make_games(1)
        """The games' groups, specs and sides (one game)."""
        for checkpoint in self.checkpoints:
            if checkpoint is not None:
                checkpoint.check_fits(self.env)
        # One network per checkpoint, built once; each game's team samples from its own fork.
        self._policies = [None if c is None else c.policy() for c in self.checkpoints]
        self._envs: list[GridEnv] = list(getattr(self.env, "envs", []))
        """magent2: one env per game played at once, made as needed."""
        start = self.env.reset([0])
        self._team_size = max(int(start[g].alive.sum()) for g in self.env.groups)
        """The largest team at the start of a game (the env's layout fixes the numbers)."""

    def play(
        self, games: Sequence[Game], on_step: Callable[[Games, int], None] | None = None,
    ) -> list[GameResult]:
        """The result of each game, all played at once: each checkpoint decides for its teams in
        every game in one batched forward a step."""
        for game in games:
            if len(game.players) > len(self.env.groups):
                raise ValueError(f"{len(game.players)} players for the groups {self.env.groups}")
        policies = [
            {group: self._policy(group, index, policy_seed(game.seed, g))
             for g, (group, index) in enumerate(zip(self.env.groups, game.players, strict=False))}
            for game in games
        ]
        with single_threaded():
            return play_games(self._games(len(games)), policies,
                              seeds=[game.seed for game in games], on_step=on_step)

    def _games(self, n: int) -> Games:
        """``n`` games to play at once: magent2's envs are kept (building one costs), the torch
        games are one set of tensors built for the batch."""
        if self.env_backend != "magent2":
            return self._make_games(n)
        while len(self._envs) < n:
            self._envs.extend(self._make_games(1).envs)
        return EnvGames(self._envs[:n])

    def _policy(self, group: str, index: int, seed: int) -> TeamPolicy:
        policy = self._policies[index]
        if policy is None:
            return RandomPolicy(self.env.specs[group].n_actions, seed=seed)
        return policy.fork(seed, team_size=self._team_size)


@dataclass(frozen=True)
class ArenaSpec:
    """How to build the ``Arena`` the games are played in (sent to each worker)."""

    paths: tuple[str, ...]
    env: str
    map_size: int
    env_options: dict = field(default_factory=dict)

    def build(self) -> Arena:
        return Arena(self.paths, self.env, self.map_size, **self.env_options)


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
