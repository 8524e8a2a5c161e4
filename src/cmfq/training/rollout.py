"""Playing rounds: every group acts, the env steps, and a learner's team is recorded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

import numpy as np

from cmfq.algos.policy import Decision, RandomPolicy
from cmfq.envs import GridEnv, Observation
from cmfq.training.replay import ReplayBuffer


class TeamPolicy(Protocol):
    """Anything that decides for a whole team: ``cmfq.algos.Policy`` or ``RandomPolicy``."""

    def decide(self, obs: Observation, prev_actions: np.ndarray | None) -> Decision: ...


class GroupResult(NamedTuple):
    """One group's outcome of a round."""

    initial: int
    """Agents at the start."""
    survivors: int
    """Agents alive at the end."""
    kills: int
    """Agents of ``env.opponents[group]`` that died (battle: enemies killed; tigers: deer eaten)."""
    reward: float
    """Total reward of the group's agents over the round."""


class RoundResult(NamedTuple):
    """The outcome of ``play_round``."""

    steps: int
    """Steps played."""
    groups: dict[str, GroupResult]
    """Per group name."""

    @property
    def deer_caught(self) -> int | None:
        """tiger-deer: deer eaten by the tigers; None in other envs."""
        return self.groups["tiger"].kills if "tiger" in self.groups else None


def play_round(
    env: GridEnv,
    policies: Mapping[str, TeamPolicy],
    *,
    seed: int,
    on_step: Callable[[GridEnv, int], None] | None = None,
    record: Mapping[str, ReplayBuffer] | None = None,
) -> RoundResult:
    """Play one round of ``env`` and return each group's survivors, kills and reward.

    Args:
        env: an env from ``cmfq.envs.make_env``; it is reset with ``seed``.
        policies: group name -> policy (e.g. ``load_checkpoint(p).policy()``); a group without
            one acts uniformly at random (the deer of tiger-deer). Policies keep no state between
            steps: the previous actions that neighbourhoods need are passed in each step.
        seed: fixes the env's placements and the random groups' actions.
        on_step: called as ``on_step(env, step)`` after every step (step counts from 1), e.g. to
            read ``env.positions(group)`` for rendering.
        record: group name -> replay buffer that receives that group's transitions (training),
            each group as its own stream, so several groups may share a buffer.
    """
    record = record or {}
    obs = env.reset(seed)
    deciders = {
        g: policies[g] if g in policies else RandomPolicy(env.specs[g].n_actions, seed=seed + i)
        for i, g in enumerate(env.groups)
    }
    unknown = set(policies) - set(env.groups)
    if unknown:
        raise ValueError(f"policies for unknown groups {sorted(unknown)}; env has {env.groups}")
    initial = {g: env.num_alive(g) for g in env.groups}
    deaths = dict.fromkeys(env.groups, 0)
    reward = dict.fromkeys(env.groups, 0.0)
    prev: dict[str, np.ndarray | None] = dict.fromkeys(env.groups)
    done = False
    while not done:
        decisions = {g: deciders[g].decide(obs[g], prev[g]) for g in env.groups}
        result = env.step({g: d.actions for g, d in decisions.items()})
        for g in env.groups:
            alive = result.alive[g]
            if g in record:
                record[g].add_step(obs[g], decisions[g], result.rewards[g], alive,
                                   terminal=result.terminated, stream=g)
            deaths[g] += int((~alive).sum())
            reward[g] += float(result.rewards[g].sum())
            obs[g] = Observation(*(a[alive] for a in result.next_obs[g]))
            prev[g] = decisions[g].actions[alive]
        done = result.done
        if on_step is not None:
            on_step(env, env.step_count)
    for g, buffer in record.items():
        # After a wipe-out nothing bootstraps; after the time limit the survivors' last
        # observation (and the neighbour input they would act with) is the s' of their last step.
        bootstrap = not result.terminated and obs[g].view.shape[0]
        final = deciders[g].decide(obs[g], prev[g]) if bootstrap else None
        buffer.end_round(obs[g], final, stream=g)
    groups = {
        g: GroupResult(
            initial=initial[g],
            survivors=env.num_alive(g),
            kills=deaths[env.opponents[g]] if env.opponents[g] else 0,
            reward=reward[g],
        )
        for g in env.groups
    }
    return RoundResult(env.step_count, groups)
