"""The generic batched-PyTorch path: works with any Q-function, and is the tests' reference.

Every intervention is a row of one big batch: for B agents and K neighbour slots, q is called once
on B*(K+1) rows (the mean action and each neighbour's action) and once on B rows (the causal mean).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cmfq.op.divergence import combine_weights, kl_from_logits

QFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def neighbor_action_vectors(
    neighbor_actions: torch.Tensor, mask: torch.Tensor, n_actions: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(e(a_k) as [B, K, A] vectors, the mean action [B, A]): one-hot for indices, as given for
    distributions; masked slots are 0 and an agent without neighbours has the zero mean."""
    if neighbor_actions.is_floating_point():
        vectors = neighbor_actions.to(dtype)
    else:
        vectors = torch.nn.functional.one_hot(neighbor_actions.clamp(0, n_actions - 1), n_actions)
        vectors = vectors.to(dtype)
    # A select, not a product: whatever a masked slot holds (a NaN included) is not used.
    vectors = torch.where(mask.unsqueeze(-1), vectors, 0.0)
    count = mask.sum(-1, keepdim=True).to(dtype)
    return vectors, vectors.sum(1) / count.clamp_min(1)


def causal_weights_reference(
    q: QFunction,
    state: torch.Tensor,
    neighbor_actions: torch.Tensor,
    mask: torch.Tensor,
    n_actions: int,
    temperature: float,
    weighting: str,
    weight_temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weights, effects, mean_action, causal_mean_action, q_causal) on validated inputs."""
    batch, slots = mask.shape
    vectors, mean_action = neighbor_action_vectors(neighbor_actions, mask, n_actions, state.dtype)

    interventions = torch.cat([mean_action.unsqueeze(1), vectors], dim=1)
    states = state.unsqueeze(1).expand(batch, slots + 1, state.shape[-1])
    values = q(states.reshape(-1, state.shape[-1]), interventions.reshape(-1, n_actions))
    logits = values.reshape(batch, slots + 1, n_actions) / temperature
    effects = kl_from_logits(logits[:, :1], logits[:, 1:]).masked_fill(~mask, 0.0)

    weights = combine_weights(effects, mask, weighting, weight_temperature)
    causal_mean_action = (weights.unsqueeze(-1) * vectors).sum(1)
    q_causal = q(state, causal_mean_action)
    return weights, effects, mean_action, causal_mean_action, q_causal
