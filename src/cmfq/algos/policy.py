"""Acting for a whole team: neighbourhoods, then one Boltzmann sample per agent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from cmfq.algos.common import Algorithm, TeamInput
from cmfq.algos.diagnostics import WeightDiagnostics
from cmfq.envs import Observation, neighbor_actions, neighborhoods, pad_neighbors


class Decision(NamedTuple):
    """What a policy chose for one team at one step (row i = agent i of the observation)."""

    actions: np.ndarray
    """int64 [n]."""
    mean_action: np.ndarray
    """float32 [n, A] the neighbour input the agents acted with (zeros for random or IL)."""
    neighbors: np.ndarray
    """int64 [n, K] neighbour rows, -1 = none."""
    neighbor_actions: np.ndarray
    """int64 [n, K] the neighbours' previous actions, -1 = masked."""


class Policy:
    """A trained algorithm acting for one team; works for any team size or map size.

    Each step, every live agent's neighbourhood is its ``k_max`` nearest live teammates within
    ``radius`` (``radius=None``: the whole team), so the network's input size never depends on the
    number of agents. Actions are sampled from softmax(Q / ``temperature``); ``temperature=0``
    acts greedily. ``seed`` fixes the sampling. The network runs on the device of ``algo``'s
    parameters (cmfq's acting step then runs the fused op there); the decisions come back as
    numpy arrays. ``diagnostics`` sums up how the neighbours were weighted over all decisions
    (training logs its means each round).
    """

    def __init__(
        self, algo: Algorithm, *, temperature: float, radius: float | None, k_max: int, seed: int
    ) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if k_max < 1:
            raise ValueError(f"k_max must be >= 1, got {k_max}")
        self.algo = algo
        self.temperature = temperature
        self.radius = radius
        self.k_max = k_max
        self.generator = torch.Generator(device=algo.device).manual_seed(seed)
        self.diagnostics = WeightDiagnostics()

    def decide(self, obs: Observation, prev_actions: np.ndarray | None) -> Decision:
        """Actions for the live agents in ``obs``; ``prev_actions`` are theirs at the last step."""
        return self.decide_teams([obs], [prev_actions])[0]

    @torch.no_grad()
    def decide_teams(
        self, teams: Sequence[Observation], prev_actions: Sequence[np.ndarray | None]
    ) -> list[Decision]:
        """``decide`` for several teams (the same side of several games) in one forward of the
        network and one sample: a GPU gets a batch worth its launch, a CPU pays the Python
        overhead once. Each team's neighbourhoods stay within the team."""
        neighbors = [
            neighborhoods(obs.positions, radius=self.radius, k_max=self.k_max) for obs in teams
        ]
        their_actions = [
            neighbor_actions(n, prev) for n, prev in zip(neighbors, prev_actions, strict=True)
        ]
        # In the batch, team j's rows follow those of teams 0..j-1, so its neighbour rows shift.
        starts = np.cumsum([0, *(obs.view.shape[0] for obs in teams[:-1])])
        width = max(n.shape[1] for n in neighbors)
        batch_neighbors = [
            pad_neighbors(np.where(n >= 0, n + start, -1), width)
            for n, start in zip(neighbors, starts, strict=True)
        ]
        device = self.generator.device
        team = TeamInput(*(
            torch.from_numpy(_concat(arrays)).to(device, non_blocking=True)
            for arrays in (
                [obs.view for obs in teams],
                [obs.features for obs in teams],
                batch_neighbors,
                [pad_neighbors(a, width) for a in their_actions],
            )
        ))
        values = self.algo.q_values(team)
        self.diagnostics.add(values, team.neighbor_actions)
        q, mean = values.q, values.mean_action
        if self.temperature == 0:
            actions = q.argmax(-1)
        elif q.shape[0]:
            probs = torch.softmax(q / self.temperature, -1)
            actions = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
        else:
            actions = torch.zeros(0, dtype=torch.int64)
        per_team = zip(
            np.split(actions.cpu().numpy(), starts[1:]), np.split(mean.cpu().numpy(), starts[1:]),
            neighbors, their_actions, strict=True,
        )
        return [Decision(*decision) for decision in per_team]

    def __call__(self, obs: Observation, prev_actions: np.ndarray | None) -> np.ndarray:
        return self.decide(obs, prev_actions).actions


class RandomPolicy:
    """Uniformly random actions (the deer of tiger-deer, or a baseline team)."""

    def __init__(self, n_actions: int, *, seed: int) -> None:
        self.n_actions = n_actions
        self.rng = np.random.default_rng(seed)

    def decide(self, obs: Observation, prev_actions: np.ndarray | None) -> Decision:
        n = obs.view.shape[0]
        empty = np.full((n, 1), -1, dtype=np.int64)
        return Decision(
            self.rng.integers(0, self.n_actions, size=n),
            np.zeros((n, self.n_actions), dtype=np.float32),
            empty,
            empty,
        )

    def decide_teams(
        self, teams: Sequence[Observation], prev_actions: Sequence[np.ndarray | None]
    ) -> list[Decision]:
        """``decide`` for each team in turn."""
        return [self.decide(obs, prev) for obs, prev in zip(teams, prev_actions, strict=True)]

    def __call__(self, obs: Observation, prev_actions: np.ndarray | None) -> np.ndarray:
        return self.decide(obs, prev_actions).actions


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    """One array of the rows of all; a single team's array as it is (no copy)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
