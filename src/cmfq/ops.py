"""Fake (meta) and autograd registrations of ``torch.ops.cmfq.causal_weights``.

The forward is the C++/CUDA kernel. The backward re-evaluates the head under the interventions
from the saved inputs, as activation checkpointing does, and reuses the forward's weights, effects
and causal mean action. On the CPU it is the kernel ``torch.ops.cmfq.causal_weights_backward``;
on other devices (there is no CUDA twin yet), and wherever the backward itself is differentiated
(``create_graph=True``), the same chain rule in PyTorch ops (``cmfq.gradient``). Both trace under
``torch.compile``.
"""

from __future__ import annotations

import torch

from cmfq import _C  # noqa: F401  (loads the C++ library that defines the op)
from cmfq.gradient import causal_weights_grad


@torch.library.register_fake("cmfq::causal_weights")
def _causal_weights_fake(
    state,
    neighbor_actions,
    neighbor_mask,
    encoder_weights,
    encoder_biases,
    trunk_weights,
    trunk_biases,
    temperature,
    weighting,
    weight_temperature,
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


@torch.library.register_fake("cmfq::causal_weights_backward")
def _causal_weights_backward_fake(
    grad_weights,
    grad_effects,
    grad_causal_mean_action,
    grad_q_causal,
    state,
    neighbor_actions,
    neighbor_mask,
    encoder_weights,
    encoder_biases,
    trunk_weights,
    trunk_biases,
    temperature,
    weighting,
    weight_temperature,
    weights,
    effects,
    causal_mean_action,
):
    def like(tensors):
        return [t.new_empty(t.shape) for t in tensors]

    return (
        state.new_empty(state.shape),
        like(encoder_weights),
        like(encoder_biases),
        like(trunk_weights),
        like(trunk_biases),
    )


def _setup_context(ctx, inputs, output):
    (state, actions, mask, enc_w, enc_b, trunk_w, trunk_b, tau, weighting, tau_w) = inputs
    weights, effects, _, causal_mean_action, _ = output
    ctx.save_for_backward(
        state,
        actions,
        mask,
        weights,
        effects,
        causal_mean_action,
        *enc_w,
        *enc_b,
        *trunk_w,
        *trunk_b,
    )
    ctx.sizes = (len(enc_w), len(enc_b), len(trunk_w))
    ctx.scalars = (tau, weighting, tau_w)


def _backward(ctx, grad_weights, grad_effects, grad_mean_action, grad_causal_mean_action, grad_q):
    state, actions, mask, weights, effects, causal_mean_action, *params = ctx.saved_tensors
    n_enc_w, n_enc_b, n_trunk_w = ctx.sizes
    cuts = [0, n_enc_w, n_enc_w + n_enc_b, n_enc_w + n_enc_b + n_trunk_w, len(params)]
    layers = tuple(params[a:b] for a, b in zip(cuts, cuts[1:]))
    if state.device.type == "cpu" and not torch.is_grad_enabled():
        grad_state, *grad_layers = torch.ops.cmfq.causal_weights_backward(
            grad_weights,
            grad_effects,
            grad_causal_mean_action,
            grad_q,
            state,
            actions,
            mask,
            *layers,
            *ctx.scalars,
            weights,
            effects,
            causal_mean_action,
        )
        return (grad_state, None, None, *grad_layers, None, None, None)
    grad_state, grad_layers = causal_weights_grad(
        grad_weights,
        grad_effects,
        grad_causal_mean_action,
        grad_q,
        state,
        actions,
        mask,
        layers,
        *ctx.scalars,
        weights,
        effects,
        causal_mean_action,
    )
    return (grad_state, None, None, *grad_layers, None, None, None)


torch.library.register_autograd("cmfq::causal_weights", _backward, setup_context=_setup_context)
