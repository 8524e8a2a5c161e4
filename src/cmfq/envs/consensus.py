"""``consensus``: a coordination game on a lattice where only the neighbours carry what the best
action needs.

One agent sits on every cell of an L x L lattice. Each game has a hidden target action c among
A; every step an agent earns 1 if it plays c, else 0, and after each step the target changes,
with probability ``target_switch``, to one of the other actions. A share ``informed_share`` of
the agents (drawn at each reset) see c in their features; the others see nothing of it, and can
only read it from what their neighbours did at the last step (MFQ's mean action ā). Every agent
sees which cells of its 5x5 window hold informed agents (not what they play).

The answers are known: an agent that ignores its neighbours (IL's best) earns ``informed_share
+ (1 - informed_share) / A`` a step; full knowledge of c earns 1; and the rule "the informed play
c, the others the most common action of their neighbours' last step" (``follow_the_neighbours``)
earns in between, near 1 when the target rarely switches. So a network that learns to use ā
beats one that cannot, by a known margin, and its policy must move when ā moves.

``ConsensusGames`` plays G games at once as tensors on any torch device (no Python loop over
agents or games); ``ConsensusEnv`` is one game behind the ``GridEnv`` interface that training
uses (numpy observations, one group ``agents``, nobody dies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from cmfq.envs.gridworld import GroupSpec, Observation, StepResult
from cmfq.options import option

VIEW = 5
"""Side of an agent's window (the smallest view ``QNetwork``'s convolutions take)."""


@dataclass
class ConsensusOptions:
    """consensus's options: its fields of a run's config, its keyword arguments here."""

    SETTINGS: ClassVar[tuple[str, ...]] = ("consensus_actions", "informed_share", "target_switch")
    """All of them shape the game; an evaluation keeps them (the map size may change)."""

    consensus_actions: int = option(
        4, "consensus only: number of actions A (the target is one of them).", positive=True)
    informed_share: float = option(
        0.25, "consensus only: share of the agents that see the target (drawn at each reset).")
    target_switch: float = option(
        0.1, "consensus only: probability that the target changes after a step (to one of the "
        "other actions): how often the uninformed must learn it anew from their neighbours.")


def check_options(map_size: int, consensus_actions: int, informed_share: float,
                  target_switch: float) -> None:
    """Raise ValueError naming the first bad option."""
    if map_size < 3:
        raise ValueError(f"consensus needs map_size >= 3, got {map_size}")
    if consensus_actions < 2:
        raise ValueError(f"consensus_actions must be >= 2, got {consensus_actions}")
    if not 0 <= informed_share <= 1:
        raise ValueError(f"informed_share must be in [0, 1], got {informed_share}")
    if not 0 <= target_switch <= 1:
        raise ValueError(f"target_switch must be in [0, 1], got {target_switch}")


class ConsensusGames:
    """``games`` consensus games on an L x L lattice (``map_size`` L), as tensors on ``device``.

    Agent i sits at ``positions[i]`` = (i // L, i % L). ``reset(seed)`` draws each game's target
    and informed agents from a generator seeded with ``seed`` (the only randomness, besides the
    target's switches); ``observe()`` gives views ``[G, N, 5, 5, 1]`` (the informed cells of the
    agent's window, zeros beyond the lattice) and features ``[G, N, A + 1]`` (the target one-hot
    and a 1 for the informed, zeros for the others); ``step(actions [G, N])`` returns the rewards
    ``[G, N]`` and then switches targets.
    """

    def __init__(
        self, map_size: int, *, games: int = 1, consensus_actions: int = 4,
        informed_share: float = 0.25, target_switch: float = 0.1,
        device: str | torch.device = "cpu",
    ) -> None:
        check_options(map_size, consensus_actions, informed_share, target_switch)
        if games < 1:
            raise ValueError(f"games must be >= 1, got {games}")
        self.map_size, self.games, self.n_actions = map_size, games, consensus_actions
        self.informed_share, self.target_switch = informed_share, target_switch
        self.device = torch.device(device)
        self.n_agents = map_size**2
        cells = torch.arange(self.n_agents, device=self.device)
        self.positions = torch.stack([cells // map_size, cells % map_size], 1)
        # The window's cells of every agent as indices into a lattice padded by VIEW // 2.
        pad = VIEW // 2
        offsets = torch.arange(-pad, pad + 1, device=self.device)
        padded = map_size + 2 * pad
        rows = self.positions[:, 0, None, None] + pad + offsets[None, :, None]
        cols = self.positions[:, 1, None, None] + pad + offsets[None, None, :]
        self._window = (rows * padded + cols).reshape(self.n_agents, VIEW * VIEW)
        self._padded = padded
        self.generator = torch.Generator(device=self.device)
        self.target = torch.zeros(games, dtype=torch.int64, device=self.device)
        self.informed = torch.zeros(games, self.n_agents, dtype=torch.bool, device=self.device)

    def reset(self, seed: int) -> None:
        """New targets and informed agents for every game."""
        self.generator.manual_seed(int(seed) % 2**63)
        g, n = self.games, self.n_agents
        self.target = torch.randint(0, self.n_actions, (g,), generator=self.generator,
                                    device=self.device)
        keys = torch.rand(g, n, generator=self.generator, device=self.device)
        ranks = keys.argsort(1).argsort(1)  # a random permutation per game
        self.informed = ranks < round(self.informed_share * n)

    def observe(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views float32 ``[G, N, 5, 5, 1]`` and features float32 ``[G, N, A + 1]``."""
        g, n, side, pad = self.games, self.n_agents, self.map_size, VIEW // 2
        lattice = self.informed.float().reshape(g, side, side)
        padded = torch.nn.functional.pad(lattice, (pad, pad, pad, pad)).reshape(g, -1)
        view = padded[:, self._window].reshape(g, n, VIEW, VIEW, 1)
        target = torch.nn.functional.one_hot(self.target, self.n_actions).float()
        informed = self.informed.float().unsqueeze(-1)
        features = torch.cat([target[:, None, :] * informed, informed], -1)
        return view, features

    def step(self, actions: torch.Tensor) -> torch.Tensor:
        """Rewards float32 ``[G, N]`` of ``actions`` int ``[G, N]``; then each game's target
        switches with probability ``target_switch``."""
        rewards = (actions == self.target[:, None]).float()
        switch = torch.rand(self.games, generator=self.generator, device=self.device)
        shift = torch.randint(1, self.n_actions, (self.games,), generator=self.generator,
                              device=self.device)
        self.target = torch.where(switch < self.target_switch,
                                  (self.target + shift) % self.n_actions, self.target)
        return rewards

    def ignoring_the_neighbours(self) -> float:
        """The best expected reward a step of an agent that ignores its neighbours: the informed
        play the target, the others can only guess it."""
        share = round(self.informed_share * self.n_agents) / self.n_agents
        return share + (1 - share) / self.n_actions


def follow_the_neighbours(
    games: ConsensusGames, neighbors: torch.Tensor, steps: int, seed: int
) -> torch.Tensor:
    """The rewards ``[steps, G, N]`` of the rule "the informed play the target, the others the
    most common of their ``neighbors``' (int ``[N, K]``, -1 = none) last actions (ties to the
    lowest, a uniformly random action at the first step or without neighbours)": what a policy
    that reads ā can earn."""
    games.reset(seed)
    g, n, a = games.games, games.n_agents, games.n_actions
    dice = torch.Generator(device=games.device).manual_seed(seed + 1)
    valid = neighbors >= 0
    last = None
    rewards = []
    for _ in range(steps):
        guess = torch.randint(0, a, (g, n), generator=dice, device=games.device)
        if last is not None:
            theirs = last[:, neighbors.clamp(min=0)]  # [G, N, K]
            counts = (torch.nn.functional.one_hot(theirs, a) * valid[None, :, :, None]).sum(2)
            guess = torch.where(valid.any(1)[None], counts.argmax(-1), guess)
        actions = torch.where(games.informed, games.target[:, None], guess)
        rewards.append(games.step(actions))
        last = actions
    return torch.stack(rewards)


class ConsensusEnv:
    """One consensus game behind the interface training and rollouts use (``GridEnv``'s): one
    group ``agents`` of every cell, nobody dies, a round lasts ``max_steps``. ``minimap_mode``
    and ``id_embedding`` are accepted for the common config and ignored (the game has no
    minimap, and the ids carry nothing)."""

    name = "consensus"
    options = ConsensusOptions
    groups = ("agents",)
    opponents: Mapping[str, str | None] = {"agents": None}
    symmetric = False

    def __init__(
        self, map_size: int, *, seed: int, max_steps: int = 25, consensus_actions: int = 4,
        informed_share: float = 0.25, target_switch: float = 0.1, minimap_mode: bool = False,
        id_embedding: bool = False,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.game = ConsensusGames(map_size, consensus_actions=consensus_actions,
                                   informed_share=informed_share, target_switch=target_switch)
        self.map_size, self.max_steps, self.seed = map_size, max_steps, seed
        self.specs = {"agents": GroupSpec(
            name="agents", view_shape=(VIEW, VIEW, 1), feature_dim=consensus_actions + 1,
            n_actions=consensus_actions, view_radius=float(VIEW // 2))}
        self.step_count = 0

    def won(self, survivors: int, opponent_survivors: int) -> bool:
        """There is nothing to win: the reward is the game's measure."""
        return False

    def reset(self, seed: int | None = None) -> dict[str, Observation]:
        self.game.reset(self.seed if seed is None else seed)
        self.step_count = 0
        return {"agents": self.observe("agents")}

    def observe(self, group: str) -> Observation:
        self._check(group)
        view, features = (t[0].numpy() for t in self.game.observe())
        return Observation(view, features, np.arange(self.game.n_agents, dtype=np.int32),
                           self.positions(group))

    def positions(self, group: str) -> np.ndarray:
        self._check(group)
        return self.game.positions.numpy().astype(np.int32)

    def num_alive(self, group: str) -> int:
        self._check(group)
        return self.game.n_agents

    def step(self, actions: Mapping[str, np.ndarray]) -> StepResult:
        if set(actions) != {"agents"}:
            raise ValueError(f"consensus takes actions for group 'agents', got {sorted(actions)}")
        a = np.asarray(actions["agents"])
        n, n_actions = self.game.n_agents, self.game.n_actions
        if a.shape != (n,):
            raise ValueError(f"group 'agents' has {n} agents but got actions of shape {a.shape}")
        if a.min() < 0 or a.max() >= n_actions:
            raise ValueError(f"actions must lie in [0, {n_actions}), got [{a.min()}, {a.max()}]")
        rewards = self.game.step(torch.from_numpy(a.astype(np.int64))[None])[0].numpy()
        self.step_count += 1
        return StepResult({"agents": self.observe("agents")}, {"agents": rewards},
                          {"agents": np.ones(n, dtype=bool)}, self.step_count >= self.max_steps,
                          False)

    def _check(self, group: str) -> None:
        if group != "agents":
            raise ValueError(f"unknown group {group!r}; this env has {self.groups}")

    def __repr__(self) -> str:
        return f"ConsensusEnv(map_size={self.map_size}, max_steps={self.max_steps})"
