"""Fake (meta) and autograd registrations of ``torch.ops.cmfq.causal_weights``.

The forward is the C++/CUDA kernel. The backward recomputes the forward with the generic PyTorch
path on the saved inputs and differentiates that (as activation checkpointing does): the same
function, so the same gradients, without storing the activations of every intervention.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cmfq import _C  # noqa: F401  (loads the C++ library that defines the op)
from cmfq.head import head_forward
from cmfq.reference import causal_weights_reference


@torch.library.register_fake("cmfq::causal_weights")
def _causal_weights_fake(
    state, neighbor_actions, neighbor_mask, encoder_weights, encoder_biases, trunk_weights,
    trunk_biases, temperature, weighting, weight_temperature,
):
    batch, slots = neighbor_mask.shape
    n_actions = trunk_weights[-1].shape[0]
    return (
        state.new_empty(batch, slots),
        state.new_empty(batch, slots),
        state.new_empty(batch, n_actions),
        state.new_empty(batch, n_actions),
        state.new_empty(batch, n_actions),
    )


@torch.library.custom_op("cmfq::causal_weights_backward", mutates_args=())
def causal_weights_backward(
    grad_weights: Tensor,
    grad_effects: Tensor,
    grad_causal_mean_action: Tensor,
    grad_q_causal: Tensor,
    state: Tensor,
    neighbor_actions: Tensor,
    neighbor_mask: Tensor,
    encoder_weights: list[Tensor],
    encoder_biases: list[Tensor],
    trunk_weights: list[Tensor],
    trunk_biases: list[Tensor],
    temperature: float,
    weighting: str,
    weight_temperature: float,
) -> list[Tensor]:
    """Gradients [state, *encoder W, *encoder b, *trunk W, *trunk b] of causal_weights."""
    layers = [encoder_weights, encoder_biases, trunk_weights, trunk_biases]
    with torch.enable_grad():
        leaves = [state.detach().requires_grad_()]
        leaves += [t.detach().requires_grad_() for group in layers for t in group]
        sizes = [len(group) for group in layers]
        groups, start = [], 1
        for size in sizes:
            groups.append(leaves[start : start + size])
            start += size

        def q(s: Tensor, x: Tensor) -> Tensor:
            return head_forward(*groups, s, x)

        weights, effects, _, causal_mean_action, q_causal = causal_weights_reference(
            q, leaves[0], neighbor_actions, neighbor_mask, trunk_weights[-1].shape[0],
            temperature, weighting, weight_temperature,
        )
        grads = torch.autograd.grad(
            [weights, effects, causal_mean_action, q_causal],
            leaves,
            [grad_weights, grad_effects, grad_causal_mean_action, grad_q_causal],
            allow_unused=True,
        )
    return [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]


@causal_weights_backward.register_fake
def _causal_weights_backward_fake(
    grad_weights, grad_effects, grad_causal_mean_action, grad_q_causal, state, neighbor_actions,
    neighbor_mask, encoder_weights, encoder_biases, trunk_weights, trunk_biases, temperature,
    weighting, weight_temperature,
):
    tensors = [state, *encoder_weights, *encoder_biases, *trunk_weights, *trunk_biases]
    return [torch.empty_like(t) for t in tensors]


def _setup_context(ctx, inputs, output):
    (state, actions, mask, enc_w, enc_b, trunk_w, trunk_b, tau, weighting, tau_w) = inputs
    ctx.save_for_backward(state, actions, mask, *enc_w, *enc_b, *trunk_w, *trunk_b)
    ctx.sizes = (len(enc_w), len(enc_b), len(trunk_w))
    ctx.scalars = (tau, weighting, tau_w)


def _backward(ctx, grad_weights, grad_effects, grad_mean_action, grad_causal_mean_action, grad_q):
    state, actions, mask, *params = ctx.saved_tensors
    n_enc_w, n_enc_b, n_trunk_w = ctx.sizes
    cuts = [0, n_enc_w, n_enc_w + n_enc_b, n_enc_w + n_enc_b + n_trunk_w, len(params)]
    layers = [params[a:b] for a, b in zip(cuts, cuts[1:])]
    grads = causal_weights_backward(
        grad_weights, grad_effects, grad_causal_mean_action, grad_q, state, actions, mask,
        *layers, *ctx.scalars,
    )
    grad_layers = [grads[1 + a : 1 + b] for a, b in zip(cuts, cuts[1:])]
    return (grads[0], None, None, *grad_layers, None, None, None)


torch.library.register_autograd("cmfq::causal_weights", _backward, setup_context=_setup_context)
