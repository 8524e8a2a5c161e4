"""Fake (meta) and autograd registrations of ``torch.ops.cmfq.causal_weights``.

The forward is the C++/CUDA kernel. The backward re-evaluates the head under the interventions
from the saved inputs, as activation checkpointing does, and reuses the forward's weights, effects
and causal mean action, in the forward's formulation. It is the op
``torch.ops.cmfq.causal_weights_backward`` on the CPU (the per-agent kernel's backward, or the
stacked formulation's) and, after a forward in the stacked formulation (CUDA's default above 1024
agents), on CUDA (``csrc/cmfq/stacked/stacked.h``); after the per-agent CUDA kernel, and
wherever the backward itself is differentiated (``create_graph=True``), it is the same chain
rule in PyTorch ops (``cmfq.op.gradient``). All trace under ``torch.compile``. Half-precision
inputs take the backward in float32, after the forward runs again in float32.
"""

from __future__ import annotations

import torch

from cmfq import _C  # loads the C++ library that defines the op
from cmfq.op.gradient import causal_weights_grad


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
    formulation="auto",
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
    formulation="auto",
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
    (state, actions, mask, enc_w, enc_b, trunk_w, trunk_b, tau, weighting, tau_w, *rest) = inputs
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
    # The backward follows the forward's formulation.
    cuda = state.device.type == "cuda"
    ctx.formulation = _C.resolve_formulation(rest[0] if rest else "auto", cuda, state.shape[0])


def _backward(ctx, grad_weights, grad_effects, grad_mean_action, grad_causal_mean_action, grad_q):
    state, actions, mask, weights, effects, causal_mean_action, *params = ctx.saved_tensors
    n_enc_w, n_enc_b, n_trunk_w = ctx.sizes
    cuts = [0, n_enc_w, n_enc_w + n_enc_b, n_enc_w + n_enc_b + n_trunk_w, len(params)]
    layers = tuple(params[a:b] for a, b in zip(cuts, cuts[1:]))
    incoming = (grad_weights, grad_effects, grad_causal_mean_action, grad_q)
    if state.dtype not in (torch.float16, torch.bfloat16):
        outputs = (weights, effects, causal_mean_action)
        grad_state, grad_layers = _gradients(ctx, incoming, state, actions, mask, layers, outputs)
        return (grad_state, None, None, *grad_layers, *_no_gradients(ctx))
    # The forward computed in float32 and rounded its outputs to the half type. The chain rule
    # needs the float32 values: the head is evaluated again at the causal mean action, and where
    # Q is steep in it, its rounding alone moved the gradients by a few percent. So the forward
    # runs again in float32, and the backward with it.
    wide_state = state.float()
    wide_layers = tuple([p.float() for p in group] for group in layers)
    wide = torch.ops.cmfq.causal_weights(
        wide_state, actions, mask, *wide_layers, *ctx.scalars, ctx.formulation
    )
    outputs = (wide[0], wide[1], wide[3])
    incoming = tuple(g.float() for g in incoming)
    grad_state, grad_layers = _gradients(
        ctx, incoming, wide_state, actions, mask, wide_layers, outputs
    )
    grad_layers = [
        [g.to(p.dtype) for g, p in zip(grads, group)] for grads, group in zip(grad_layers, layers)
    ]
    return (grad_state.to(state.dtype), None, None, *grad_layers, *_no_gradients(ctx))


def _no_gradients(ctx) -> tuple[None, ...]:
    """The gradients of the scalar inputs, none, one per input the call passed after the seven
    tensors and tensor lists (torch leaves out trailing arguments equal to their defaults)."""
    return (None,) * (len(ctx.needs_input_grad) - 7)


def _gradients(ctx, incoming, state, actions, mask, layers, outputs):
    """(grad of state, grads of the four layer lists): the backward op, or the PyTorch chain rule
    (after the per-agent CUDA kernel, or when the backward is itself differentiated)."""
    backward_op = state.device.type == "cpu" or ctx.formulation != "per_agent"
    if backward_op and not torch.is_grad_enabled():
        grad_state, *grad_layers = torch.ops.cmfq.causal_weights_backward(
            *incoming, state, actions, mask, *layers, *ctx.scalars, *outputs, ctx.formulation
        )
        return grad_state, grad_layers
    return causal_weights_grad(*incoming, state, actions, mask, layers, *ctx.scalars, *outputs)


torch.library.register_autograd("cmfq::causal_weights", _backward, setup_context=_setup_context)
