"""The Q-network head that the fused kernels evaluate (docs/spec.md, "The Q-network head")."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import nn


def _mlp(in_features: int, widths: Sequence[int], relu_last: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    if layers and not relu_last:
        layers.pop()
    return layers


def _linears(sequence: nn.Module, name: str) -> tuple[list[nn.Linear], bool]:
    """The Linear layers of ``sequence`` and whether a ReLU follows the last one; raises unless it
    is what the fused kernels evaluate: Linear layers with biases, a ReLU between two of them."""
    linears: list[nn.Linear] = []
    relu_last = False
    for position, module in enumerate(sequence.children()):
        if isinstance(module, nn.Linear) and module.bias is not None and (relu_last or not linears):
            linears.append(module)
            relu_last = False
        elif type(module) is nn.ReLU and linears and not relu_last:
            relu_last = True
        else:
            raise ValueError(
                f"MeanFieldHead.{name}[{position}] is {module!r}, which the fused kernels do not "
                f"evaluate: {name} must be Linear layers with biases and a ReLU between two of "
                "them (a ReLU after the last one or not); for another network, pass a plain "
                "callable q(state, x) to cmfq.causal_weights (its generic path)"
            )
    return linears, relu_last


class MeanFieldHead(nn.Module):
    """Q(s, ., x) for a state embedding ``s`` and a (mean) neighbour action ``x``.

    After the original MFQ battle network: the action ``x`` goes through ``action_encoder``
    (one Linear per entry of ``action_hidden``, a ReLU after each), is concatenated to the state
    embedding, and ``trunk`` (one Linear+ReLU per entry of ``hidden``, then a Linear to
    ``n_actions``) gives the action values. ``action_encoder`` and ``trunk`` are plain
    ``nn.Sequential`` s of ``Linear`` and ``ReLU`` modules, so other codebases can load or build
    the weights (``load_state_dict``, or assigning their own ``Sequential``: the fused op then
    evaluates it if it is Linear layers with a ReLU between two, and raises otherwise).

    ``action_scale`` multiplies ``x`` before the action branch (or, with an empty
    ``action_hidden``, before the trunk): a mean action at the scale of neighbour counts rather
    than of a distribution. The fused kernels take it folded into the first weight that reads
    ``x`` (``W (c x) = (c W) x``), which gradients flow through.

    ``action_relu_last=False`` leaves out the ReLU after the action branch's last Linear, as the
    PyTorch port of MFQ (github.com/deligentfool/mfrl_pytorch) has it: its
    ``Linear(A, 64), ReLU, Linear(64, 32)`` (examples/mfq_port_weights.py). The fused kernels
    then take that Linear folded into the trunk's first layer (a Linear of a Linear is one
    Linear), which gradients flow through to both.
    """

    def __init__(
        self,
        state_dim: int,
        n_actions: int,
        action_hidden: Sequence[int] = (64, 32),
        hidden: Sequence[int] = (128, 64),
        *,
        action_scale: float = 1.0,
        action_relu_last: bool = True,
    ) -> None:
        super().__init__()
        state_dim, n_actions = operator.index(state_dim), operator.index(n_actions)
        action_hidden = tuple(operator.index(w) for w in action_hidden)
        hidden = tuple(operator.index(w) for w in hidden)
        if state_dim < 1 or n_actions < 1:
            raise ValueError(
                f"state_dim and n_actions must be >= 1, got state_dim={state_dim}, "
                f"n_actions={n_actions}"
            )
        if any(w < 1 for w in (*action_hidden, *hidden)):
            raise ValueError(
                f"layer widths must be >= 1, got action_hidden={action_hidden}, hidden={hidden}"
            )
        if not action_scale > 0:
            raise ValueError(f"action_scale must be > 0, got {action_scale}")
        self.state_dim = state_dim
        self.n_actions = n_actions
        self.action_scale = float(action_scale)
        self.action_hidden = action_hidden
        self.hidden = hidden
        self.action_encoder = nn.Sequential(*_mlp(n_actions, action_hidden, action_relu_last))
        encoded = action_hidden[-1] if action_hidden else n_actions
        trunk = _mlp(state_dim + encoded, hidden, relu_last=True)
        trunk.append(nn.Linear(hidden[-1] if hidden else state_dim + encoded, n_actions))
        self.trunk = nn.Sequential(*trunk)

    def forward(self, state: torch.Tensor, action_dist: torch.Tensor) -> torch.Tensor:
        """Action values [N, A] for states [N, state_dim] and action distributions [N, A]."""
        if self.action_scale != 1.0:
            action_dist = self.action_scale * action_dist
        return self.trunk(torch.cat([state, self.action_encoder(action_dist)], dim=-1))

    def linear_layers(self) -> tuple[list[torch.Tensor], ...]:
        """The weights and biases the fused op takes: encoder W, encoder b, trunk W, trunk b,
        each encoder layer followed by a ReLU. Raises ``ValueError`` for modules it cannot take."""
        encoder, encoder_relu_last = _linears(self.action_encoder, "action_encoder")
        trunk, trunk_relu_last = _linears(self.trunk, "trunk")
        if not trunk or trunk_relu_last:
            raise ValueError(
                "MeanFieldHead.trunk must end with a Linear to the action values (no ReLU after it)"
            )
        encoder_w, encoder_b = [m.weight for m in encoder], [m.bias for m in encoder]
        first_w, first_b = trunk[0].weight, trunk[0].bias
        if self.action_scale != 1.0:  # W (c x) = (c W) x, in the first layer that reads x
            if encoder_w:
                encoder_w[0] = self.action_scale * encoder_w[0]
            else:
                split = first_w.shape[1] - self.n_actions
                first_w = torch.cat(
                    [first_w[:, :split], self.action_scale * first_w[:, split:]], dim=1)
        if encoder_w and not encoder_relu_last:
            # W1 [s; W e + b] + b1 = [W1s, W1a W] [s; e] + (b1 + W1a b): the last encoder Linear
            # folded into the first trunk layer, so that every encoder layer has its ReLU.
            last_w, last_b = encoder_w.pop(), encoder_b.pop()
            split = first_w.shape[1] - last_w.shape[0]
            action_w = first_w[:, split:]
            first_w = torch.cat([first_w[:, :split], action_w @ last_w], dim=1)
            first_b = first_b + action_w @ last_b
        return (
            encoder_w,
            encoder_b,
            [first_w] + [m.weight for m in trunk[1:]],
            [first_b] + [m.bias for m in trunk[1:]],
        )
