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

import torch

from cmfq.algos.policy import GroupDecision, RandomPolicy
from cmfq.envs import Games, GroupState
from cmfq.training.rollout import GameResult, GroupResult, TeamPolicy
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

    Each step, each policy decides for all its teams (its groups of the games it plays them in)
    in one ``decide_group``: the groups' rows of those games, stacked. A game that ends waits for
    the others; on the step after its last, unless a side was wiped out, its groups decide once
    more on its final state (the neighbour input its survivors would act with, which the replay
    keeps with their last observation), and from then on not at all.
    """
    counts = {"games": games.n_games, "policies": len(policies), "seeds": len(seeds),
              "record": len(record)}
    if len(set(counts.values())) != 1:
        raise ValueError(f"policies, seeds and record need one entry per game; got {counts}")
    device = games.device
    state = games.reset(seeds)
    teams = _teams(games, policies, seeds)
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
        decisions = _decide(games, teams, state, prev, ~over | ~(was_over | terminated))
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


def _teams(games: Games, policies: Sequence[Mapping[str, TeamPolicy]], seeds: Sequence[int]
           ) -> list[tuple[TeamPolicy, Teams]]:
    """Each distinct policy with its teams, in the order first named (random groups: a policy of
    their own per game, seeded as ``play_games`` seeds them)."""
    by_policy: dict[int, tuple[TeamPolicy, dict[str, list[int]]]] = {}
    for j, (named, seed) in enumerate(zip(policies, seeds, strict=True)):
        unknown = set(named) - set(games.groups)
        if unknown:
            raise ValueError(f"policies for unknown groups {sorted(unknown)}; the games have "
                             f"{games.groups}")
        for i, g in enumerate(games.groups):
            policy = named[g] if g in named else RandomPolicy(games.specs[g].n_actions,
                                                               seed=seed + i)
            _, its_games = by_policy.setdefault(id(policy), (policy, {}))
            its_games.setdefault(g, []).append(j)
    return [
        (policy, [(g, torch.tensor(js, device=games.device)) for g, js in its_games.items()])
        for policy, its_games in by_policy.values()
    ]


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
    games: Games, teams: list[tuple[TeamPolicy, Teams]], state: Mapping[str, GroupState],
    prev: Mapping[str, torch.Tensor], deciding: torch.Tensor,
) -> dict[str, GroupDecision]:
    """Every group's decision over all games (the games not ``deciding``: nothing, as for the
    dead): one ``decide_group`` per policy, its teams' rows stacked."""
    parts: dict[str, list[tuple[torch.Tensor, GroupDecision]]] = {g: [] for g in games.groups}
    for policy, its_teams in teams:
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
