"""What the algorithms share: their inputs, the TD targets, and the ``Algorithm`` interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cmfq.algos.network import NetworkOptions, QNetwork
from cmfq.envs import GroupSpec


class TeamInput(NamedTuple):
    """One team at one step, as tensors: what an algorithm acts on."""

    view: torch.Tensor
    """float [n, H, W, C]."""
    features: torch.Tensor
    """float [n, F]."""
    neighbors: torch.Tensor
    """int64 [n, K] row indices of each agent's neighbours in this team, -1 = none."""
    neighbor_actions: torch.Tensor
    """int64 [n, K] the neighbours' previous actions, -1 = masked (none, or first step)."""


class QValues(NamedTuple):
    """What an algorithm acts on for one team, and how it weighted the neighbours."""

    q: torch.Tensor
    """float [n, A] the action values the agents act on."""
    neighbor_input: torch.Tensor
    """float [n, A] the neighbour input they act with: the mean action (mfq), the causal mean
    action (cmfq) or the attention-weighted one (amfq)."""
    weights: torch.Tensor | None = None
    """float [n, K] the weight of each neighbour slot in ``neighbor_input`` (0 where masked); None
    for the algorithms that do not weight neighbours (il, mfq)."""
    effects: torch.Tensor | None = None
    """float [n, K] cmfq: the causal effects c_ik in nats (0 where masked); None otherwise."""


class Batch(NamedTuple):
    """Transitions sampled from the replay buffer.

    Observations are stored once in ``view``/``features`` (U rows) and referenced by index, so a
    batch can carry the neighbours' observations that AMFQ attends over without copying them.
    """

    view: torch.Tensor
    """float [U, H, W, C]."""
    features: torch.Tensor
    """float [U, F]."""
    obs: torch.Tensor
    """int64 [B] row of each transition's observation s."""
    next_obs: torch.Tensor
    """int64 [B] row of s' (any valid row where ``done``)."""
    action: torch.Tensor
    """int64 [B]."""
    reward: torch.Tensor
    """float [B]."""
    done: torch.Tensor
    """float [B]: 1 where the agent died in this step (no bootstrap)."""
    neighbor_input: torch.Tensor
    """float [B, A] the neighbour input the agent acted with (mean, causal or attention)."""
    next_neighbor_input: torch.Tensor
    """float [B, A] the same at s'."""
    neighbors: torch.Tensor
    """int64 [B, K] rows of the neighbours' observations at s, -1 = none."""
    neighbor_actions: torch.Tensor
    """int64 [B, K] their previous actions, -1 = masked."""
    next_neighbors: torch.Tensor
    """int64 [B, K] the same at s'."""
    next_neighbor_actions: torch.Tensor
    """int64 [B, K] the same at s'."""


def mean_action(neighbor_actions: torch.Tensor, n_actions: int) -> torch.Tensor:
    """ā = the average one-hot of the unmasked actions (-1 = masked); zeros without neighbours."""
    valid = neighbor_actions >= 0
    one_hot = F.one_hot(neighbor_actions.clamp(min=0), n_actions).to(torch.float32)
    total = (one_hot * valid.unsqueeze(-1)).sum(1)
    return total / valid.sum(1, keepdim=True).clamp(min=1)


def max_value(q_next: torch.Tensor) -> torch.Tensor:
    """max_a Q(s', a): the DQN value."""
    return q_next.max(-1).values


def boltzmann_value(q_next: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """Σ_a π(a|s') Q(s', a) with π = softmax(Q / τ): the mean-field value of Yang et al. 2018.
    τ = 0 gives the max. A tensor τ (a learner's, kept on the device) must be > 0: testing it
    here would make the host wait for the device."""
    if not isinstance(temperature, torch.Tensor) and temperature <= 0:
        return max_value(q_next)
    return (torch.softmax(q_next / temperature, -1) * q_next).sum(-1)


def double_q_value(q_next_target: torch.Tensor, q_next_online: torch.Tensor) -> torch.Tensor:
    """Q_target(s', argmax_a Q_online(s', a)): the double-DQN value."""
    return q_next_target.gather(-1, q_next_online.argmax(-1, keepdim=True)).squeeze(-1)


def td_loss(
    q_taken: torch.Tensor, reward: torch.Tensor, done: torch.Tensor, next_value: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Huber loss between Q(s, a) and r + γ (1 - done) V(s'); V(s') carries no gradient."""
    target = reward + gamma * (1.0 - done) * next_value.detach()
    return F.smooth_l1_loss(q_taken, target)


TD_TARGETS = ("boltzmann", "max", "double")
"""The values V(s') a TD target can bootstrap from: the mean-field value Σ_a π(a|s') Q'(s', a)
(π = softmax(Q'/τ)), max_a Q'(s', a), or the double-DQN Q'(s', argmax_a Q(s', a))."""


class Algorithm(nn.Module, ABC):
    """A Q-learner for one team: ``q_values`` to act, ``loss`` to learn.

    ``net`` is the shared ``QNetwork``. ``q_values`` returns the action values the agents act on
    and the neighbour input they used (stored in the replay buffer for the target), with the
    neighbour weights behind that input where it has any; ``loss`` is the
    TD loss of a batch against a ``target`` copy of the same algorithm, at Boltzmann temperature
    ``temperature`` (the current exploration temperature). ``td_target`` (one of ``TD_TARGETS``)
    is the bootstrap value of every algorithm alike, so that they differ only in the neighbour
    input.
    """

    name: ClassVar[str]
    options: ClassVar[type | None] = None
    """The dataclass of the algorithm's own options (keyword arguments beyond ``gamma`` and
    ``td_target``, and fields of a run's config), if it has any."""
    needs_neighbor_obs: ClassVar[bool] = False
    """True if ``loss`` reads the neighbours' observations (the batch then carries them)."""

    def __init__(
        self, spec: GroupSpec, *, gamma: float = 0.95, td_target: str = "boltzmann",
        neighbor_branch: str = NetworkOptions.neighbor_branch,
    ) -> None:
        super().__init__()
        if td_target not in TD_TARGETS:
            raise ValueError(f"td_target must be one of {TD_TARGETS}, got {td_target!r}")
        self.spec = spec
        self.gamma = gamma
        self.td_target = td_target
        self.net = QNetwork(spec, neighbor_branch)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def next_value(
        self, q_next: torch.Tensor, online_q_next: Callable[[], torch.Tensor],
        temperature: float | torch.Tensor,
    ) -> torch.Tensor:
        """V(s') from the target network's values ``q_next`` [B, A]; ``online_q_next()`` gives
        the online network's (evaluated only for the double target)."""
        if self.td_target == "double":
            return double_q_value(q_next, online_q_next())
        if self.td_target == "max":
            return max_value(q_next)
        return boltzmann_value(q_next, temperature)

    @abstractmethod
    def q_values(self, team: TeamInput) -> QValues:
        """The action values, the neighbour input (and its weights) of one team."""

    @abstractmethod
    def loss(
        self, batch: Batch, target: Algorithm, temperature: float | torch.Tensor
    ) -> torch.Tensor:
        """The TD loss of ``batch`` (``temperature``: see ``boltzmann_value``)."""
