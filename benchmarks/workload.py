"""The benchmark's inputs: the benchmarked shapes, a head whose action branch matters, and data.

Every implementation receives the same ``Workload`` (same head, same state, same actions), so the
outputs can be checked equal before anything is timed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from shapes import ACTION_HIDDEN, HIDDEN, MASKED_FRACTION, N_ACTIONS, STATE_DIM

import cmfq

TEMPERATURE = 0.1
# With the default initialisation the action branch barely moves Q: each effect is ~1e-5 nats,
# where float32 rounding decides the weights. Scaled up, effects are ~0.1 nats and comparing the
# implementations at float32 tolerance checks the maths, not the rounding.
ACTION_BRANCH_SCALE = 4.0


@dataclass
class Workload:
    head: cmfq.MeanFieldHead
    state: torch.Tensor
    actions: torch.Tensor
    """int64 [B, K], -1 where the slot is empty."""

    @property
    def n_actions(self) -> int:
        return self.head.n_actions

    def distinct_actions(self) -> float:
        """Mean number of distinct valid actions per agent: the interventions a kernel needs."""
        present = torch.zeros(self.actions.shape[0], self.n_actions + 1, dtype=torch.bool)
        present.scatter_(1, (self.actions.cpu() + 1).clamp_min(0), True)
        return float(present[:, 1:].sum(1).double().mean()) if self.actions.numel() else 0.0


def make_head(device: str, dtype: torch.dtype, seed: int = 0) -> cmfq.MeanFieldHead:
    torch.manual_seed(seed)
    head = cmfq.MeanFieldHead(STATE_DIM, N_ACTIONS, ACTION_HIDDEN, HIDDEN)
    with torch.no_grad():
        for module in head.action_encoder:
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(ACTION_BRANCH_SCALE)
        head.trunk[0].weight[:, STATE_DIM:].mul_(ACTION_BRANCH_SCALE)
    return head.to(device=device, dtype=dtype)


def make_workload(
    batch: int, slots: int, device: str, dtype: torch.dtype, seed: int = 0
) -> Workload:
    head = make_head(device, dtype, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    state = torch.randn(batch, STATE_DIM, generator=generator)
    actions = torch.randint(0, N_ACTIONS, (batch, slots), generator=generator)
    empty = torch.rand(batch, slots, generator=generator) < MASKED_FRACTION
    actions = actions.masked_fill(empty, -1)
    return Workload(head, state.to(device=device, dtype=dtype), actions.to(device))
