"""Acting for a whole team: neighbourhoods, then one Boltzmann sample per agent."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from cmfq.algos.common import Algorithm, TeamInput
from cmfq.envs import Observation, neighbor_actions, neighborhoods


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
    numpy arrays.
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

    @torch.no_grad()
    def decide(self, obs: Observation, prev_actions: np.ndarray | None) -> Decision:
        """Actions for the live agents in ``obs``; ``prev_actions`` are theirs at the last step."""
        neighbors = neighborhoods(obs.positions, radius=self.radius, k_max=self.k_max)
        their_actions = neighbor_actions(neighbors, prev_actions)
        device = self.generator.device
        team = TeamInput(
            *(torch.from_numpy(a).to(device, non_blocking=True)
              for a in (obs.view, obs.features, neighbors, their_actions))
        )
        q, mean = self.algo.q_values(team)
        if self.temperature == 0:
            actions = q.argmax(-1)
        elif q.shape[0]:
            probs = torch.softmax(q / self.temperature, -1)
            actions = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
        else:
            actions = torch.zeros(0, dtype=torch.int64)
        return Decision(actions.cpu().numpy(), mean.cpu().numpy(), neighbors, their_actions)

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

    def __call__(self, obs: Observation, prev_actions: np.ndarray | None) -> np.ndarray:
        return self.decide(obs, prev_actions).actions
