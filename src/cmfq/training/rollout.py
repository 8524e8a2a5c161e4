"""Playing games (episodes): every group acts, the games step, and a learner's team is recorded;
the games play in lockstep (``cmfq.envs.Games``, on either backend), each policy deciding for all
its teams in one batch. A training round plays its games with one ``play_games`` call, then
learns.

The games are tensors with a slot per agent; a policy and the replay see a team's live agents as
numpy rows (``Observation``), in slot order, which is the order magent2 keeps its live agents in.
This is the magent2 backend's training and every backend's tournaments; training on the torch
backend plays on the tensors themselves (``tensor_rollout.play_on_tensors``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from cmfq.algos.policy import Decision, Policy, RandomPolicy, decide_together
from cmfq.envs import EnvGames, Games, GamesStep, GridEnv, GroupState, Observation
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
    games: Games | Sequence[GridEnv],
    policies: Sequence[Mapping[str, TeamPolicy]],
    *,
    seeds: Sequence[int],
    on_step: Callable[[Games, int], None] | None = None,
    record: Sequence[Mapping[str, ReplayBuffer]] | None = None,
) -> list[GameResult]:
    """Play the G ``games`` in lockstep and return each game's survivors, kills and reward per
    group.

    ``games``: a ``cmfq.envs.Games`` (``make_games``, either backend), or a list of envs (from
    ``cmfq.envs.make_env``), one game each, played as ``EnvGames(envs)``. Game j is reset with
    ``seeds[j]``, played by ``policies[j]`` and recorded into ``record[j]``:

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
    every game. A game that ends waits for the others; ``on_step(games, j)`` is called after each
    step of game j, e.g. to draw it.
    """
    if not isinstance(games, Games):
        games = EnvGames(games)
    check_players(games, policies, seeds, record)
    state = games.reset(seeds)
    in_play = [
        _Game.start(j, games, state, policies[j], seeds[j], {} if record is None else record[j])
        for j in range(games.n_games)
    ]
    while playing := [game for game in in_play if not game.over]:
        decisions = _decide([(game, g) for game in playing for g in games.groups])
        actions = {g: torch.zeros(s.alive.shape, dtype=torch.long) for g, s in state.items()}
        for game in playing:
            for g in games.groups:
                actions[g][game.index, game.slots[g]] = torch.from_numpy(
                    decisions[game.index, g].actions)
        result = games.step({g: a.to(games.device) for g, a in actions.items()})
        for game in playing:
            game.step(result, {g: decisions[game.index, g] for g in games.groups})
            if on_step is not None:
                on_step(games, game.index)
        state = result.groups
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
    return [game.result() for game in in_play]


def check_players(
    games: Games, policies: Sequence[Mapping[str, TeamPolicy]], seeds: Sequence[int],
    record: Sequence | None,
) -> None:
    """``policies``, ``seeds`` and ``record`` (when given) need one entry per game, and the
    policies name only the games' groups."""
    counts = {"games": games.n_games, "policies": len(policies), "seeds": len(seeds)}
    if record is not None:
        counts["record"] = len(record)
    if len(set(counts.values())) != 1:
        raise ValueError(f"policies, seeds and record need one entry per game; got {counts}")
    unknown = set().union(*policies) - set(games.groups)
    if unknown:
        raise ValueError(f"policies for unknown groups {sorted(unknown)}; the games have "
                         f"{games.groups}")


def _team(state: GroupState, game: int) -> tuple[torch.Tensor, Observation]:
    """A team's live slots (on the CPU) and their observation as numpy rows (ids: the slots)."""
    alive = state.alive[game]
    view, features, positions = (
        t[game][alive].cpu().numpy() for t in (state.view, state.features, state.positions))
    slots = alive.nonzero().flatten().cpu()
    return slots, Observation(view, features, slots.numpy().astype(np.int32),
                              positions.astype(np.int32))


@dataclass
class _Game:
    """One game of ``play_games`` while it plays: who decides, its live teams, and the tallies."""

    index: int
    games: Games
    deciders: dict[str, TeamPolicy]
    record: Mapping[str, ReplayBuffer]
    slots: dict[str, torch.Tensor]
    """Each group's live slots."""
    obs: dict[str, Observation]
    """Each group's live agents' observation."""
    prev: dict[str, np.ndarray | None]
    """Each group's actions at the last step (row i: live agent i), None at the first."""
    initial: dict[str, int]
    deaths: dict[str, int]
    reward: dict[str, float]
    steps: int = 0
    over: bool = False
    terminated: bool = False

    @classmethod
    def start(
        cls, index: int, games: Games, state: dict[str, GroupState],
        policies: Mapping[str, TeamPolicy], seed: int, record: Mapping[str, ReplayBuffer],
    ) -> _Game:
        deciders = {
            g: policies[g] if g in policies
            else RandomPolicy(games.specs[g].n_actions, seed=seed + i)
            for i, g in enumerate(games.groups)
        }
        teams = {g: _team(state[g], index) for g in games.groups}
        return cls(
            index, games, deciders, record, slots={g: t[0] for g, t in teams.items()},
            obs={g: t[1] for g, t in teams.items()}, prev=dict.fromkeys(games.groups),
            initial={g: len(t[0]) for g, t in teams.items()},
            deaths=dict.fromkeys(games.groups, 0), reward=dict.fromkeys(games.groups, 0.0),
        )

    def step(self, result: GamesStep, decisions: Mapping[str, Decision]) -> None:
        """Record the recorded groups' transitions of the step, and keep the survivors."""
        j = self.index
        self.over, self.terminated = bool(result.done[j]), bool(result.terminated[j])
        self.steps += 1
        for g in self.games.groups:
            acted = self.slots[g]
            alive = result.groups[g].alive[j].cpu()[acted].numpy()
            rewards = result.rewards[g][j].cpu()[acted].numpy()
            if g in self.record:
                self.record[g].add_step(self.obs[g], decisions[g], rewards, alive,
                                        terminal=self.terminated, stream=(j, g))
            self.deaths[g] += int((~alive).sum())
            self.reward[g] += float(rewards.sum())
            self.slots[g], self.obs[g] = _team(result.groups[g], j)
            self.prev[g] = decisions[g].actions[alive]

    def result(self) -> GameResult:
        games = self.games
        groups = {
            g: GroupResult(
                initial=self.initial[g],
                survivors=len(self.slots[g]),
                kills=self.deaths[games.opponents[g]] if games.opponents[g] else 0,
                reward=self.reward[g],
            )
            for g in games.groups
        }
        return GameResult(self.steps, groups)


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
