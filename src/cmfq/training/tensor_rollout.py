"""Playing a training round's games on tensors: every group acts on the games' tensors
(``Policy.decide_group``), the games step, and the recorded teams' steps go to ``SlotReplay``s,
all on the games' device. The host learns each step whether every game is over and how many
agents live (the forward's rows), and reads the games' tallies once, at the end.

``rollout.play_games`` plays the same games on numpy rows (the magent2 backend's training, and
tournaments): the rules of who acts, what is recorded and what a game's result is are the same;
the draws are not (``decide_group`` samples once for all of a policy's teams, and the replay is
sampled on the device).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

from cmfq.algos.policy import GroupDecision, Policy, RandomPolicy, act_at_random
from cmfq.envs import Games, GroupState
from cmfq.training.rollout import GameResult, GroupResult, TeamPolicy, check_players
from cmfq.training.slot_replay import SlotReplay

Teams = list[tuple[str, torch.Tensor]]
"""A policy's teams: (group, the games in which it plays that group)."""


def play_on_tensors(
    games: Games, policies: Sequence[Mapping[str, TeamPolicy]], *, seeds: Sequence[int],
    record: Sequence[Mapping[str, SlotReplay]],
) -> list[GameResult]:
    """Play the G ``games`` in lockstep and return each game's result, as
    ``rollout.play_games`` does (game j reset with ``seeds[j]``, played by ``policies[j]``, a
    group without a policy acting at random from ``seeds[j]``), recording ``record[j][group]``'s
    (game, group) streams into those slot replays.

    Each step, each network policy decides for all its teams (its groups of the games it plays
    them in) in one ``decide_group``, the groups' rows of those games stacked, and each group's
    random teams draw at once (``act_at_random``). A game that ends waits for
    the others; on the step after its last, unless a side was wiped out, its groups decide once
    more on its final state (the neighbour input its survivors would act with, which the replay
    keeps with their last observation), and from then on not at all.
    """
    check_players(games, policies, seeds, record)
    device = games.device
    state = games.reset(seeds)
    deciders = _deciders(games, policies, seeds)
    replays = _begin_recording(games, record, state)
    over = torch.zeros(games.n_games, dtype=torch.bool, device=device)
    was_over = over.clone()  # over before the last step: those games decide no more
    terminated = over.clone()  # a side wiped out: nothing bootstraps, no final decision
    prev = {g: torch.full(s.alive.shape, -1, dtype=torch.long, device=device)
            for g, s in state.items()}
    initial = {g: s.alive.sum(1) for g, s in state.items()}
    deaths = {g: torch.zeros_like(n) for g, n in initial.items()}
    reward = {g: torch.zeros(games.n_games, dtype=torch.float64, device=device) for g in state}
    steps = torch.zeros(games.n_games, dtype=torch.long, device=device)
    while True:
        decisions = _decide(games, deciders, state, prev, ~over | ~(was_over | terminated))
        if bool(over.all()):
            for replay in replays:
                replay.end_round(state, decisions)
            break
        result = games.step({g: d.actions for g, d in decisions.items()})
        playing = ~over
        for replay in replays:
            replay.add_step(state, decisions, result, playing)
        steps += playing
        for g, s in state.items():
            deaths[g] += (s.alive & ~result.groups[g].alive & playing[:, None]).sum(1)
            reward[g] += result.rewards[g].sum(1).double()
        prev = {g: d.actions for g, d in decisions.items()}
        was_over, over, terminated, state = over, result.done, result.terminated, result.groups
    return _results(games, steps, initial, state, deaths, reward)


class _Deciders(NamedTuple):
    """Who decides for the games' groups: each network policy with its teams, and each group's
    random teams (drawn at once, ``act_at_random``)."""

    networks: list[tuple[Policy, Teams]]
    randoms: dict[str, tuple[list[RandomPolicy], list[int], torch.Tensor]]
    """group -> (the policy of each of its random teams, the team's index among its policy's
    teams, the games)."""


def _deciders(games: Games, policies: Sequence[Mapping[str, TeamPolicy]], seeds: Sequence[int]
              ) -> _Deciders:
    """Each distinct network policy with its teams, in the order first named; the random teams
    (a group without a policy gets one of its own per game, seeded as ``play_games`` seeds it),
    a random policy's teams numbered in game order, then group order."""
    networks: dict[int, tuple[Policy, dict[str, list[int]]]] = {}
    randoms: dict[str, tuple[list[RandomPolicy], list[int], list[int]]] = {}
    teams_of: dict[int, int] = {}  # a random policy's teams so far
    for j, (named, seed) in enumerate(zip(policies, seeds, strict=True)):
        for i, g in enumerate(games.groups):
            policy = named[g] if g in named else RandomPolicy(games.specs[g].n_actions,
                                                               seed=seed + i)
            if isinstance(policy, RandomPolicy):
                its, team, its_games = randoms.setdefault(g, ([], [], []))
                its.append(policy)
                team.append(teams_of.get(id(policy), 0))
                its_games.append(j)
                teams_of[id(policy)] = team[-1] + 1
            else:
                networks.setdefault(id(policy), (policy, {}))[1].setdefault(g, []).append(j)
    device = games.device
    return _Deciders(
        [(policy, [(g, torch.tensor(js, device=device)) for g, js in its_games.items()])
         for policy, its_games in networks.values()],
        {g: (its, team, torch.tensor(js, device=device))
         for g, (its, team, js) in randoms.items()},
    )


def _begin_recording(games: Games, record: Sequence[Mapping[str, SlotReplay]],
                     state: Mapping[str, GroupState]) -> list[SlotReplay]:
    """Tell each replay its streams, in game order then group order; returns the replays."""
    streams: dict[int, tuple[SlotReplay, list[tuple[int, str]]]] = {}
    for j, recorded in enumerate(record):
        for g in games.groups:
            if g in recorded:
                streams.setdefault(id(recorded[g]), (recorded[g], []))[1].append((j, g))
    for replay, its_streams in streams.values():
        slots = {state[g].alive.shape[1] for _, g in its_streams}
        if len(slots) != 1:
            raise ValueError(f"a slot replay records groups of one size; these have {slots}")
        replay.begin_round(its_streams, slots.pop())
    return [replay for replay, _ in streams.values()]


def _decide(
    games: Games, deciders: _Deciders, state: Mapping[str, GroupState],
    prev: Mapping[str, torch.Tensor], deciding: torch.Tensor,
) -> dict[str, GroupDecision]:
    """Every group's decision over all games (the games not ``deciding``: nothing, as for the
    dead): one ``decide_group`` per network policy, its teams' rows stacked, and one draw for
    each group's random teams."""
    parts: dict[str, list[tuple[torch.Tensor, GroupDecision]]] = {g: [] for g in games.groups}
    for policy, its_teams in deciders.networks:
        stacked = GroupState(*(
            torch.cat([getattr(state[g], field).index_select(0, js) for g, js in its_teams])
            for field in GroupState._fields
        ))
        playing = torch.cat([deciding.index_select(0, js) for _, js in its_teams])
        stacked = stacked._replace(alive=stacked.alive & playing[:, None])
        their_prev = torch.cat([prev[g].index_select(0, js) for g, js in its_teams])
        decided = policy.decide_group(stacked, their_prev)
        sizes = [len(js) for _, js in its_teams]
        for (g, js), *fields in zip(its_teams, *(t.split(sizes) for t in decided), strict=True):
            parts[g].append((js, GroupDecision(*fields)))
    for g, (its, teams, js) in deciders.randoms.items():
        alive = state[g].alive.index_select(0, js) & deciding.index_select(0, js)[:, None]
        actions = act_at_random(its, teams, alive)
        # As ``RandomPolicy.decide``: no neighbours (one column of -1), no neighbour input.
        none = torch.full((*actions.shape, 1), -1, dtype=torch.long, device=actions.device)
        parts[g].append((js, GroupDecision(
            actions, torch.zeros(*actions.shape, its[0].n_actions, device=actions.device),
            none, none)))
    return {g: _merge(games.n_games, its_parts) for g, its_parts in parts.items()}


def _merge(n_games: int, parts: list[tuple[torch.Tensor, GroupDecision]]) -> GroupDecision:
    """One group's decision over all games from its policies' parts (games ``js`` each), its
    neighbour columns as wide as the widest part's (-1 beyond a part's own)."""
    width = max(part.neighbors.shape[2] for _, part in parts)
    first = parts[0][1]
    merged = GroupDecision(
        first.actions.new_zeros(n_games, *first.actions.shape[1:]),
        first.neighbor_input.new_zeros(n_games, *first.neighbor_input.shape[1:]),
        *(first.neighbors.new_full((n_games, first.neighbors.shape[1], width), -1)
          for _ in range(2)),
    )
    for js, part in parts:
        for into, value in zip(merged, part, strict=True):
            into[..., :value.shape[-1]].index_copy_(0, js, value)
    return merged


def _results(
    games: Games, steps: torch.Tensor, initial: Mapping[str, torch.Tensor],
    state: Mapping[str, GroupState], deaths: Mapping[str, torch.Tensor],
    reward: Mapping[str, torch.Tensor],
) -> list[GameResult]:
    """The games' results from their tallies: one read of the device."""
    groups = games.groups
    counts = torch.stack([steps, *(initial[g] for g in groups),
                          *(state[g].alive.sum(1) for g in groups),
                          *(deaths[g] for g in groups)]).tolist()
    rewards = torch.stack([reward[g] for g in groups]).tolist()
    n = len(groups)
    results = []
    for j in range(games.n_games):
        start = {g: counts[1 + k][j] for k, g in enumerate(groups)}
        alive = {g: counts[1 + n + k][j] for k, g in enumerate(groups)}
        died = {g: counts[1 + 2 * n + k][j] for k, g in enumerate(groups)}
        results.append(GameResult(counts[0][j], {
            g: GroupResult(
                initial=start[g], survivors=alive[g],
                kills=died[games.opponents[g]] if games.opponents[g] else 0,
                reward=rewards[k][j],
            )
            for k, g in enumerate(groups)
        }))
    return results
