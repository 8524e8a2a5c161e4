"""The implementations of causal weights that the benchmark compares.

Each ``make_*`` takes the head and returns ``f(state, actions) -> (weights, effects, mean_action,
causal_mean_action, q_causal)``. The hand-written ones reuse ``kl_from_logits`` and
``combine_weights`` so that all five compute the same function (docs/spec.md) and differ only in how
they evaluate the head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from workload import TEMPERATURE

import cmfq
from cmfq.op.divergence import combine_weights, kl_from_logits

CausalFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]

WEIGHTING = "proportional"
WEIGHT_TEMPERATURE = 1.0


def _formulation(formulation: str) -> Callable[[cmfq.MeanFieldHead], CausalFn]:
    """The fused op given the ``MeanFieldHead`` itself, in ``formulation``; its backward follows
    the forward's."""

    def make(head: cmfq.MeanFieldHead) -> CausalFn:
        def call(state: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(
                cmfq.causal_weights(
                    head, state, actions, temperature=TEMPERATURE, formulation=formulation
                )
            )

        return call

    return make


# The benchmark's names of the fused op's formulations: its per-agent kernel (the CPU's
# default, and CUDA's up to 1024 agents); the stacked formulation, every agent's intervention rows
# through each trunk layer as one GEMM; the same with the trunk in one CUDA launch (CUDA's default
# above 1024 agents).
FORMULATIONS = {"fused": "per_agent", "stacked": "stacked", "trunk": "fused_trunk"}
make_fused = _formulation(FORMULATIONS["fused"])
make_stacked = _formulation(FORMULATIONS["stacked"])
make_trunk = _formulation(FORMULATIONS["trunk"])


def make_generic(head: cmfq.MeanFieldHead) -> CausalFn:
    """The batched PyTorch path: a plain callable makes ``causal_weights`` evaluate every
    intervention as a row of one big batch."""

    def q(state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return head(state, x)

    def generic(state: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(
            cmfq.causal_weights(
                q, state, actions, temperature=TEMPERATURE, n_actions=head.n_actions
            )
        )

    return generic


def make_compiled(head: cmfq.MeanFieldHead) -> CausalFn:
    """``torch.compile`` of the generic path, with the default options a user would start from."""
    # One compiled function serves every shape and grad mode of the run; the default limit of
    # recompilations would silently fall back to eager after a few of them.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    return torch.compile(make_generic(head))


def _one_hots(actions: torch.Tensor, n_actions: int, dtype: torch.dtype) -> torch.Tensor:
    vectors = nn.functional.one_hot(actions.clamp_min(0), n_actions).to(dtype)
    return vectors * (actions >= 0).unsqueeze(-1).to(dtype)


def make_naive(head: cmfq.MeanFieldHead) -> CausalFn:
    """What a quick research implementation does: a Python loop over the neighbour slots, one
    head evaluation of all agents per slot."""

    def naive(state: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask = actions >= 0
        vectors = _one_hots(actions, head.n_actions, state.dtype)
        count = mask.sum(-1, keepdim=True).clamp_min(1).to(state.dtype)
        mean_action = vectors.sum(1) / count
        reference = head(state, mean_action) / TEMPERATURE
        effects = []
        for k in range(actions.shape[1]):
            logits = head(state, vectors[:, k]) / TEMPERATURE
            effects.append(kl_from_logits(reference, logits))
        effect = torch.stack(effects, dim=1).masked_fill(~mask, 0.0)
        weights = combine_weights(effect, mask, WEIGHTING, WEIGHT_TEMPERATURE)
        causal_mean_action = (weights.unsqueeze(-1) * vectors).sum(1)
        return weights, effect, mean_action, causal_mean_action, head(state, causal_mean_action)

    return naive


def make_factored(head: cmfq.MeanFieldHead) -> CausalFn:
    """The best a careful user writes by hand for one-hot actions: the state half of the first
    trunk layer once per agent, the A one-hot interventions as one batched evaluation of the rest
    of the trunk, and each neighbour's effect gathered from the KL of its action."""
    encoder_w, encoder_b, trunk_w, trunk_b = head.linear_layers()
    n_actions, state_dim = head.n_actions, head.state_dim

    def encode(x: torch.Tensor) -> torch.Tensor:
        for w, b in zip(encoder_w, encoder_b, strict=True):
            x = torch.relu(nn.functional.linear(x, w, b))
        return nn.functional.linear(x, trunk_w[0][:, state_dim:])

    def rest_of_trunk(pre_activation: torch.Tensor) -> torch.Tensor:
        h = pre_activation
        for w, b in zip(trunk_w[1:], trunk_b[1:], strict=True):
            h = nn.functional.linear(torch.relu(h), w, b)
        return h

    def factored(state: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask = actions >= 0
        vectors = _one_hots(actions, n_actions, state.dtype)
        count = mask.sum(-1, keepdim=True).clamp_min(1).to(state.dtype)
        mean_action = vectors.sum(1) / count
        state_proj = nn.functional.linear(state, trunk_w[0][:, :state_dim], trunk_b[0])
        eye = torch.eye(n_actions, dtype=state.dtype, device=state.device)
        action_table = encode(eye)
        reference = rest_of_trunk(state_proj + encode(mean_action)) / TEMPERATURE
        per_action = rest_of_trunk(state_proj.unsqueeze(1) + action_table) / TEMPERATURE
        kl_per_action = kl_from_logits(reference.unsqueeze(1), per_action)
        effects = kl_per_action.gather(1, actions.clamp_min(0)).masked_fill(~mask, 0.0)
        weights = combine_weights(effects, mask, WEIGHTING, WEIGHT_TEMPERATURE)
        causal_mean_action = (weights.unsqueeze(-1) * vectors).sum(1)
        q_causal = rest_of_trunk(state_proj + encode(causal_mean_action))
        return weights, effects, mean_action, causal_mean_action, q_causal

    return factored


IMPLEMENTATIONS: dict[str, Callable[[cmfq.MeanFieldHead], CausalFn]] = {
    "fused": make_fused,
    "stacked": make_stacked,
    "trunk": make_trunk,
    "generic": make_generic,
    "compiled": make_compiled,
    "factored": make_factored,
    "naive": make_naive,
}
