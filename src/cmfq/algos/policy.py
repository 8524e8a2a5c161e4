"""Acting for a whole team: neighbourhoods, then one Boltzmann sample per agent.

Two paths: ``decide`` and ``decide_teams`` take teams as numpy rows (``Observation``) and give
numpy decisions with their neighbourhoods (training on the magent2 backend and tournaments, whose
draws they fix); ``decide_group`` takes one group of G games as tensors (``cmfq.envs.GroupState``)
and gives its decision as tensors over the slots (``GroupDecision``), on the policy's device,
without a loop over games or agents (training on the torch backend; ``act``: its actions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from cmfq.algos.common import Algorithm, TeamInput
from cmfq.algos.diagnostics import NeighborSensitivity, WeightDiagnostics
from cmfq.envs import (
    GroupState,
    Observation,
    neighbor_actions,
    neighborhoods,
    pad_neighbors,
    slot_neighborhoods,
)
from cmfq.envs.counter_rng import as_int64, below, splitmix64

MIN_ROWS = 16
"""Rows a fork's forward has at least (``Policy.fork``): from 16 rows on, the CPU kernels compute
a row the same whatever the other rows (checked on an AVX-512 Xeon from 16 to 2048 rows; below,
a test of one, three or five agents fails)."""


class Decision(NamedTuple):
    """What a policy chose for one team at one step (row i = agent i of the observation)."""

    actions: np.ndarray
    """int64 [n]."""
    neighbor_input: np.ndarray
    """float32 [n, A] the neighbour input the agents acted with (zeros for random or IL)."""
    neighbors: np.ndarray
    """int64 [n, K] neighbour rows, -1 = none."""
    neighbor_actions: np.ndarray
    """int64 [n, K] the neighbours' previous actions, -1 = masked."""


class GroupDecision(NamedTuple):
    """What a policy chose for one group of G games (``decide_group``): ``Decision``'s fields
    over the group's slots, on the policy's device; a dead slot's row is 0 (action, neighbour
    input) or -1 (neighbours)."""

    actions: torch.Tensor
    """long [G, n]."""
    neighbor_input: torch.Tensor
    """float32 [G, n, A]."""
    neighbors: torch.Tensor
    """long [G, n, K] the neighbours' slots, -1 = none."""
    neighbor_actions: torch.Tensor
    """long [G, n, K] their previous actions, -1 = masked."""


class Policy:
    """A trained algorithm acting for one team; works for any team size or map size.

    Each step, every live agent's neighbourhood is its ``k_max`` nearest live teammates within
    ``radius`` (``radius=None``: the whole team), so the network's input size never depends on the
    number of agents. Actions are sampled from softmax(Q / ``temperature``); ``temperature=0``
    acts greedily. ``seed`` fixes the sampling. The network runs on the device of ``algo``'s
    parameters (cmfq's acting step then runs the fused op there); the decisions come back as
    numpy arrays. With ``measure_weights``, ``diagnostics`` sums up how the neighbours were
    weighted over all decisions (training logs its means each round; evaluation does not measure,
    which saves about 5% of cmfq's acting). With a ``sensitivity_floor`` (the same architecture
    freshly initialised), ``sensitivity`` measures how much the policy, and the floor's, move
    with the neighbour input on a sample of the decisions (``algos.diagnostics``).
    """

    def __init__(
        self, algo: Algorithm, *, temperature: float, radius: float | None, k_max: int, seed: int,
        measure_weights: bool = False, sensitivity_floor: Algorithm | None = None,
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
        self.diagnostics = WeightDiagnostics() if measure_weights else None
        """The neighbour-weight statistics of this policy's decisions (``algos.diagnostics``), or
        None without ``measure_weights``."""
        self.sensitivity = (
            None if sensitivity_floor is None else NeighborSensitivity(algo, sensitivity_floor))
        """The neighbour sensitivity of a sample of this policy's decisions and its floor, or None
        without a ``sensitivity_floor``."""
        self._min_rows = 0
        """A forward's rows at least (padded): set on forks."""
        self._min_width = 0
        """A forward's neighbour columns at least (padded): set on forks."""

    def fork(self, seed: int, *, team_size: int) -> Policy:
        """The same network and settings with its own sampling ``seed``, for games played at once
        that must each play exactly as it would alone: forks of one policy decide together, in
        one forward (``decide_together``), and each team samples from its own fork's generator.

        A row's values must then not depend on the other rows of its forward. On the CPU they do
        below about 16 rows (oneDNN's convolutions and MKL's matrix products switch kernels,
        which round differently), and AMFQ's attention depends on the neighbour columns; so a
        fork pads every forward to at least ``MIN_ROWS`` rows and, for global neighbourhoods,
        to ``team_size - 1`` neighbour columns (``team_size``: the largest team it will play).
        """
        fork = Policy(self.algo, temperature=self.temperature, radius=self.radius,
                      k_max=self.k_max, seed=seed)
        fork._min_rows = MIN_ROWS
        fork._min_width = team_size - 1 if self.radius is None else 0
        return fork

    @property
    def batch_key(self) -> tuple:
        """Equal for policies that may decide in one forward (``decide_together``)."""
        return (self.algo, self.temperature, self.radius, self.k_max, self._min_rows,
                self._min_width)

    def decide(self, obs: Observation, prev_actions: np.ndarray | None) -> Decision:
        """Actions for the live agents in ``obs``; ``prev_actions`` are theirs at the last step."""
        return self.decide_teams([obs], [prev_actions])[0]

    def decide_teams(
        self, teams: Sequence[Observation], prev_actions: Sequence[np.ndarray | None]
    ) -> list[Decision]:
        """``decide`` for several teams (the same side of several games) in one forward of the
        network and one sample: a GPU gets a batch worth its launch, a CPU pays the Python
        overhead once. Each team's neighbourhoods stay within the team."""
        return self._decide(teams, prev_actions, [self.generator] * len(teams))

    @torch.no_grad()
    def _decide(
        self, teams: Sequence[Observation], prev_actions: Sequence[np.ndarray | None],
        generators: Sequence[torch.Generator],
    ) -> list[Decision]:
        """One forward for all ``teams``; team j samples from ``generators[j]``."""
        neighbors = [
            neighborhoods(obs.positions, radius=self.radius, k_max=self.k_max) for obs in teams
        ]
        their_actions = [
            neighbor_actions(n, prev) for n, prev in zip(neighbors, prev_actions, strict=True)
        ]
        # In the batch, team j's rows follow those of teams 0..j-1, so its neighbour rows shift.
        starts = np.cumsum([0, *(obs.view.shape[0] for obs in teams[:-1])])
        width = max(self._min_width, *(n.shape[1] for n in neighbors))
        batch_neighbors = [
            pad_neighbors(np.where(n >= 0, n + start, -1), width)
            for n, start in zip(neighbors, starts, strict=True)
        ]
        rows = int(sum(obs.view.shape[0] for obs in teams))
        padding = max(0, self._min_rows - rows)
        device = self.generator.device
        team = TeamInput(*(
            torch.from_numpy(_concat(arrays, padding, fill)).to(device, non_blocking=True)
            for arrays, fill in (
                ([obs.view for obs in teams], 0),
                ([obs.features for obs in teams], 0),
                (batch_neighbors, -1),
                ([pad_neighbors(a, width) for a in their_actions], -1),
            )
        ))
        values = self.algo.q_values(team)
        if self.diagnostics is not None:
            self.diagnostics.add(values, team.neighbor_actions)  # padded rows have no neighbours
        if self.sensitivity is not None:
            self.sensitivity.add(team, values.neighbor_input, rows)
        q, mean = values.q[:rows], values.neighbor_input[:rows]
        teams_of: dict[torch.Generator, list[int]] = {}
        for j, generator in enumerate(generators):
            teams_of.setdefault(generator, []).append(j)
        if self.temperature == 0:
            actions = q.argmax(-1)
        elif len(teams_of) == 1:
            actions = _sample(q / self.temperature, generators[0])
        else:
            # Each generator draws once, for the rows of all its teams in order: what it draws
            # when its own policy decides for those teams, so forks play as they would alone.
            actions = torch.empty(q.shape[0], dtype=torch.int64, device=q.device)
            ends = [*starts[1:], q.shape[0]]
            for generator, its_teams in teams_of.items():
                its_rows = torch.from_numpy(
                    np.concatenate([np.arange(starts[j], ends[j]) for j in its_teams])
                ).to(q.device)
                actions[its_rows] = _sample(q[its_rows] / self.temperature, generator)
        per_team = zip(
            np.split(actions.cpu().numpy(), starts[1:]), np.split(mean.cpu().numpy(), starts[1:]),
            neighbors, their_actions, strict=True,
        )
        return [Decision(*decision) for decision in per_team]

    def act(self, state: GroupState, prev_actions: torch.Tensor) -> torch.Tensor:
        """``decide_group``'s actions."""
        return self.decide_group(state, prev_actions).actions

    @torch.no_grad()
    def decide_group(self, state: GroupState, prev_actions: torch.Tensor) -> GroupDecision:
        """The decision for one group of G games as tensors (either backend), on the policy's
        device: each live slot's action sampled as ``decide`` samples, with its neighbours (slots)
        and the neighbour input it acted with. ``prev_actions`` (long [G, n]): each slot's action
        at the last step, -1 at the first.

        The neighbourhoods of all games at once (``slot_neighborhoods``); the live agents of all
        games are the rows of one forward, game 0's live slots first, in slot order, as in
        ``decide_teams`` over the games' teams; one sample from ``generator``. So with the same
        generator state and values (a forward of at least ``MIN_ROWS`` rows, and for global
        neighbourhoods a full team among the games: the same neighbour width) it draws what
        ``decide_teams`` draws. The host only learns how many agents live (one wait on a GPU).
        """
        device = self.generator.device
        view, features, positions, alive = (t.to(device) for t in state)
        slots = slot_neighborhoods(positions, alive, radius=self.radius, k_max=self.k_max)
        flat = slots.flatten(1).clamp(min=0)
        # A live slot's row in the forward: how many live slots come before it, in all games.
        row = (alive.flatten().cumsum(0) - 1).view(alive.shape)
        neighbors = torch.where(slots >= 0, row.gather(1, flat).view_as(slots), -1)
        their_actions = torch.where(
            slots >= 0, prev_actions.to(device).gather(1, flat).view_as(slots), -1)
        live = alive.flatten().nonzero().squeeze(1)
        n_actions = self.algo.spec.n_actions
        if not len(live):  # every game's group dead or not deciding: no forward
            return GroupDecision(torch.zeros_like(prev_actions, device=device),
                                 torch.zeros(*alive.shape, n_actions, device=device), slots,
                                 their_actions)
        team = TeamInput(*(t.flatten(0, 1).index_select(0, live)
                           for t in (view, features, neighbors, their_actions)))
        values = self.algo.q_values(team)
        if self.diagnostics is not None:
            self.diagnostics.add(values, team.neighbor_actions)
        if self.sensitivity is not None:
            self.sensitivity.add(team, values.neighbor_input, len(live))
        if self.temperature == 0:
            chosen = values.q.argmax(-1)
        else:
            chosen = _sample(values.q / self.temperature, self.generator)
        actions = torch.zeros(alive.numel(), dtype=torch.long, device=device).index_copy_(
            0, live, chosen).view(alive.shape)
        neighbor_input = torch.zeros(alive.numel(), n_actions, device=device).index_copy_(
            0, live, values.neighbor_input.float()).view(*alive.shape, n_actions)
        return GroupDecision(actions, neighbor_input, slots, their_actions)

    def __call__(self, obs: Observation, prev_actions: np.ndarray | None) -> np.ndarray:
        return self.decide(obs, prev_actions).actions


class RandomPolicy:
    """Uniformly random actions (the deer of tiger-deer, or a baseline team): numpy draws for
    ``decide``, counter-based draws on the games' device for ``act`` (``act_at_random``)."""

    def __init__(self, n_actions: int, *, seed: int) -> None:
        self.n_actions = n_actions
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.steps = 0
        """The ``act`` steps it has drawn (its tensor draws' counter)."""

    @property
    def batch_key(self) -> RandomPolicy:
        """Each random team draws from its own generator: nothing to batch."""
        return self

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

    def act(self, state: GroupState, prev_actions: torch.Tensor) -> torch.Tensor:
        """``Policy.act``'s: long [G, n] on ``state``'s device, uniform for the live, 0 for the
        dead; row j is this policy's team j (``act_at_random``)."""
        rows = state.alive.shape[0]
        return act_at_random([self] * rows, list(range(rows)), state.alive)

    def __call__(self, obs: Observation, prev_actions: np.ndarray | None) -> np.ndarray:
        return self.decide(obs, prev_actions).actions


RANDOM_ACTIONS = 0x52414E44
"""The key of the random teams' action draws (``act_at_random``)."""


def act_at_random(policies: Sequence[RandomPolicy], teams: Sequence[int], alive: torch.Tensor
                  ) -> torch.Tensor:
    """Uniform actions, long [T, n] on ``alive``'s device (0 for the dead), for T teams of random
    policies of one action count at once: row t is team ``teams[t]`` of ``policies[t]``, whose
    slot i draws from (its seed, the team, the policy's ``steps``, i) with counter-based
    SplitMix64 (``envs.counter_rng``), so a team draws the same alone or with any others, on any
    device. Each policy's ``steps`` then counts this step."""
    device = alive.device
    n_actions = {policy.n_actions for policy in policies}
    if len(n_actions) != 1:
        raise ValueError(f"act_at_random draws for one action count, got {sorted(n_actions)}")
    seeds = as_int64([policy.seed for policy in policies], device)
    steps = torch.tensor([policy.steps for policy in policies], device=device)
    keys = splitmix64(splitmix64(splitmix64(seeds, RANDOM_ACTIONS), torch.tensor(
        teams, device=device)), steps)
    words = splitmix64(keys[:, None], torch.arange(alive.shape[1], device=device))
    for policy in set(policies):
        policy.steps += 1
    return torch.where(alive, below(words, n_actions.pop()), 0)


def decide_together(
    policies: Sequence[Policy | RandomPolicy], teams: Sequence[Observation],
    prev_actions: Sequence[np.ndarray | None],
) -> list[Decision]:
    """Team j's decision by ``policies[j]``, for policies of one ``batch_key`` (one policy, or
    forks of one): one forward for all teams, each sampled from its own policy's generator."""
    if len({policy.batch_key for policy in policies}) != 1:
        raise ValueError("decide_together needs policies of one batch_key")
    first = policies[0]
    if isinstance(first, Policy):
        return first._decide(teams, prev_actions, [policy.generator for policy in policies])
    return first.decide_teams(teams, prev_actions)


def _sample(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One action per row from softmax(``logits``); nothing drawn for no rows."""
    if not logits.shape[0]:
        return torch.zeros(0, dtype=torch.int64, device=logits.device)
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _concat(arrays: list[np.ndarray], padding: int, fill: int) -> np.ndarray:
    """One array of the rows of all and ``padding`` rows of ``fill``; a single team's array as it
    is (no copy) where nothing is padded."""
    if padding:
        arrays = [*arrays, np.full((padding, *arrays[0].shape[1:]), fill, arrays[0].dtype)]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
