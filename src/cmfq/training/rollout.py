"""Playing games (episodes): every group acts, the env steps, and a learner's team is recorded;
several games play in lockstep, each policy deciding for all its teams in one batch. A training
round plays its games with one ``play_games`` call, then learns."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cmfq.algos.policy import Decision, Policy, RandomPolicy, decide_together
from cmfq.envs import GridEnv, Observation
from cmfq.training.replay import ReplayBuffer

TeamPolicy = Policy | RandomPolicy
"""What decides for a team."""


class GroupResult(NamedTuple):
    """One group's outcome of a game."""

    initial: int
    """Agents at the start."""
    survivors: int
    """Agents alive at the end."""
    kills: int
    """Agents of ``env.opponents[group]`` that died (battle: enemies killed; tigers: deer eaten)."""
    reward: float
    """Total reward of the group's agents over the game."""


class GameResult(NamedTuple):
    """The outcome of one game of ``play_games``."""

    steps: int
    """Steps played."""
    groups: dict[str, GroupResult]
    """Per group name."""

    @property
    def deer_caught(self) -> int | None:
        """tiger-deer: deer eaten by the tigers; None in other envs."""
        return self.groups["tiger"].kills if "tiger" in self.groups else None


def play_games(
    envs: Sequence[GridEnv],
    policies: Sequence[Mapping[str, TeamPolicy]],
    *,
    seeds: Sequence[int],
    on_step: Callable[[GridEnv, int], None] | None = None,
    record: Sequence[Mapping[str, ReplayBuffer]] | None = None,
) -> list[GameResult]:
    """Play one game in each env, all in lockstep, and return each game's survivors, kills and
    reward per group.

    Game j is ``envs[j]`` (from ``cmfq.envs.make_env``) reset with ``seeds[j]``, played by
    ``policies[j]`` and recorded into ``record[j]``:

    - ``policies[j]``: group name -> policy (e.g. ``load_checkpoint(p).policy()``); a group
      without one acts uniformly at random, seeded from ``seeds[j]`` (the deer of tiger-deer).
      Policies keep no state between steps: the previous actions that neighbourhoods need are
      passed in each step.
    - ``record[j]``: group name -> replay buffer that receives that group's transitions
      (training). Every (game, group) is its own replay stream, so transitions of different
      games never share a TD target, and several groups may share a buffer.

    Each step, the teams whose policies share a ``batch_key`` (one policy playing in several
    games, as the learner does in training, or forks of one, as a checkpoint does in a
    tournament) decide in one ``decide_together`` call: one batched forward over the agents of
    every game. A game that ends waits for the others; ``on_step(env, step)`` is called after
    each env's step (step counts from 1), e.g. to read ``env.positions(group)`` for rendering.
    """
    counts = {"envs": len(envs), "policies": len(policies), "seeds": len(seeds)}
    if record is not None:
        counts["record"] = len(record)
    if len(set(counts.values())) != 1:
        raise ValueError(f"policies, seeds and record need one entry per env; got {counts}")
    games = [
        _Game.start(j, env, policies[j], seeds[j], {} if record is None else record[j])
        for j, env in enumerate(envs)
    ]
    while playing := [game for game in games if not game.over]:
        decisions = _decide([(game, g) for game in playing for g in game.env.groups])
        for game in playing:
            game.step({g: decisions[game.index, g] for g in game.env.groups})
            if on_step is not None:
                on_step(game.env, game.env.step_count)
        ended = [game for game in playing if game.over]
        # After a wipe-out nothing bootstraps; after the time limit the survivors' last
        # observation (and the neighbour input they would act with) is the s' of their last step.
        final = _decide([
            (game, g) for game in ended for g in game.record
            if not game.terminated and game.obs[g].view.shape[0]
        ])
        for game in ended:
            for g, buffer in game.record.items():
                buffer.end_round(game.obs[g], final.get((game.index, g)), stream=(game.index, g))
    return [game.result() for game in games]


@dataclass
class _Game:
    """One game of ``play_games`` while it plays: the env, who decides, and the tallies."""

    index: int
    env: GridEnv
    deciders: dict[str, TeamPolicy]
    record: Mapping[str, ReplayBuffer]
    obs: dict[str, Observation]
    prev: dict[str, np.ndarray | None]
    """Each group's actions at the last step (row i: live agent i), None at the first."""
    initial: dict[str, int]
    deaths: dict[str, int]
    reward: dict[str, float]
    over: bool = False
    terminated: bool = False

    @classmethod
    def start(
        cls, index: int, env: GridEnv, policies: Mapping[str, TeamPolicy], seed: int,
        record: Mapping[str, ReplayBuffer],
    ) -> _Game:
        unknown = set(policies) - set(env.groups)
        if unknown:
            raise ValueError(f"policies for unknown groups {sorted(unknown)}; env has {env.groups}")
        deciders = {
            g: policies[g] if g in policies else RandomPolicy(env.specs[g].n_actions, seed=seed + i)
            for i, g in enumerate(env.groups)
        }
        obs = env.reset(seed)
        return cls(
            index, env, deciders, record, obs, prev=dict.fromkeys(env.groups),
            initial={g: env.num_alive(g) for g in env.groups},
            deaths=dict.fromkeys(env.groups, 0), reward=dict.fromkeys(env.groups, 0.0),
        )

    def step(self, decisions: Mapping[str, Decision]) -> None:
        """Act, record the recorded groups' transitions, and keep the survivors' observations."""
        result = self.env.step({g: d.actions for g, d in decisions.items()})
        for g in self.env.groups:
            alive = result.alive[g]
            if g in self.record:
                self.record[g].add_step(self.obs[g], decisions[g], result.rewards[g], alive,
                                        terminal=result.terminated, stream=(self.index, g))
            self.deaths[g] += int((~alive).sum())
            self.reward[g] += float(result.rewards[g].sum())
            self.obs[g] = Observation(*(a[alive] for a in result.next_obs[g]))
            self.prev[g] = decisions[g].actions[alive]
        self.over, self.terminated = result.done, result.terminated

    def result(self) -> GameResult:
        env = self.env
        groups = {
            g: GroupResult(
                initial=self.initial[g],
                survivors=env.num_alive(g),
                kills=self.deaths[env.opponents[g]] if env.opponents[g] else 0,
                reward=self.reward[g],
            )
            for g in env.groups
        }
        return GameResult(env.step_count, groups)


def _decide(teams: list[tuple[_Game, str]]) -> dict[tuple[int, str], Decision]:
    """Decisions for (game, group) teams, keyed (game index, group): one ``decide_together`` call
    per ``batch_key``, for all the teams of its policies, in the order they are first named."""
    shared: dict[object, list[tuple[_Game, str]]] = {}
    for game, g in teams:
        shared.setdefault(game.deciders[g].batch_key, []).append((game, g))
    decisions = {}
    for its_teams in shared.values():
        made = decide_together(
            [game.deciders[g] for game, g in its_teams],
            [game.obs[g] for game, g in its_teams], [game.prev[g] for game, g in its_teams],
        )
        decisions |= {(game.index, g): d for (game, g), d in zip(its_teams, made, strict=True)}
    return decisions
