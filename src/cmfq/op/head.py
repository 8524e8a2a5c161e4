"""The Q-network head that the fused kernels evaluate (docs/spec.md, "The Q-network head")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _mlp(in_features: int, widths: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    return layers


class MeanFieldHead(nn.Module):
    """Q(s, ., x) for a state embedding ``s`` and a (mean) neighbour action ``x``.

    After the original MFQ battle network: the action ``x`` goes through ``action_encoder``
    (one Linear+ReLU per entry of ``action_hidden``), is concatenated to the state embedding, and
    ``trunk`` (one Linear+ReLU per entry of ``hidden``, then a Linear to ``n_actions``) gives the
    action values. ``action_encoder`` and ``trunk`` are plain ``nn.Sequential`` s of ``Linear`` and
    ``ReLU`` modules, so other codebases can load or build the weights.
    """

    def __init__(
        self,
        state_dim: int,
        n_actions: int,
        action_hidden: Sequence[int] = (64, 32),
        hidden: Sequence[int] = (128, 64),
    ) -> None:
        super().__init__()
        if state_dim < 1 or n_actions < 1:
            raise ValueError(
                f"state_dim and n_actions must be >= 1, got state_dim={state_dim}, "
                f"n_actions={n_actions}"
            )
        if any(w < 1 for w in (*action_hidden, *hidden)):
            raise ValueError(
                f"layer widths must be >= 1, got action_hidden={action_hidden}, hidden={hidden}"
            )
        self.state_dim = state_dim
        self.n_actions = n_actions
        self.action_hidden = tuple(action_hidden)
        self.hidden = tuple(hidden)
        self.action_encoder = nn.Sequential(*_mlp(n_actions, self.action_hidden))
        encoded = self.action_hidden[-1] if self.action_hidden else n_actions
        trunk = _mlp(state_dim + encoded, self.hidden)
        trunk.append(nn.Linear(self.hidden[-1] if self.hidden else state_dim + encoded, n_actions))
        self.trunk = nn.Sequential(*trunk)

    def forward(self, state: torch.Tensor, action_dist: torch.Tensor) -> torch.Tensor:
        """Action values [N, A] for states [N, state_dim] and action distributions [N, A]."""
        return self.trunk(torch.cat([state, self.action_encoder(action_dist)], dim=-1))

    def linear_layers(self) -> tuple[list[torch.Tensor], ...]:
        """The weights and biases the fused op takes: encoder W, encoder b, trunk W, trunk b."""
        enc = [m for m in self.action_encoder if isinstance(m, nn.Linear)]
        trunk = [m for m in self.trunk if isinstance(m, nn.Linear)]
        return (
            [m.weight for m in enc],
            [m.bias for m in enc],
            [m.weight for m in trunk],
            [m.bias for m in trunk],
        )
