"""The gradient of ``cmfq::causal_weights``, composed of PyTorch ops so that it traces under
``torch.compile``. It re-evaluates the head under every intervention, as the generic path does,
keeping the activations, and runs the chain rule backwards by hand:

    q_causal = Q(s, ǎ)                    -> grads to s, the head, and ǎ
    ǎ = sum_k w_k e(a_k)                  -> dL/dw_k += <dL/dǎ, e(a_k)>
    w = c / sum c   or   softmax(c / τ_w) -> dL/dc  (no gradient where the weights are uniform)
    c_k = KL(softmax(u_0) || softmax(u_k)), u = Q / τ:
        dc_k/du_k = softmax(u_k) - p,  dc_k/du_0 = p * (log p - log softmax(u_k) - c_k)
    u_0 = Q(s, ā) / τ,  u_k = Q(s, e(a_k)) / τ  -> grads to s and the head
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from cmfq.divergence import EFFECT_THRESHOLD, combine_weights, kl_from_logits
from cmfq.reference import neighbor_action_vectors

Layers = tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]


class _HeadActivations(NamedTuple):
    action: Tensor
    encoder_pre: list[Tensor]
    trunk_inputs: list[Tensor]
    trunk_pre: list[Tensor]


def _head_forward(layers: Layers, state: Tensor, action: Tensor) -> tuple[Tensor, _HeadActivations]:
    encoder_w, encoder_b, trunk_w, trunk_b = layers
    encoder_pre, hidden = [], action
    for w, b in zip(encoder_w, encoder_b):
        encoder_pre.append(F.linear(hidden, w, b))
        hidden = torch.relu(encoder_pre[-1])
    trunk_inputs, trunk_pre = [torch.cat([state, hidden], dim=-1)], []
    for w, b in zip(trunk_w, trunk_b):
        trunk_pre.append(F.linear(trunk_inputs[-1], w, b))
        trunk_inputs.append(torch.relu(trunk_pre[-1]))
    return trunk_pre[-1], _HeadActivations(action, encoder_pre, trunk_inputs[:-1], trunk_pre)


def _head_backward(
    layers: Layers, cache: _HeadActivations, grad_values: Tensor, state_dim: int
) -> tuple[Tensor, Tensor, list[list[Tensor]]]:
    """(grad of the state rows, grad of the action rows, grads of the four layer lists)."""
    encoder_w, _, trunk_w, _ = layers
    grad_trunk_w, grad_trunk_b = [], []
    grad = grad_values
    for i in reversed(range(len(trunk_w))):
        grad_trunk_w.insert(0, grad.t() @ cache.trunk_inputs[i])
        grad_trunk_b.insert(0, grad.sum(0))
        grad = grad @ trunk_w[i]
        if i > 0:
            grad = grad * (cache.trunk_pre[i - 1] > 0)
    grad_state, grad = grad[:, :state_dim], grad[:, state_dim:]
    grad_encoder_w, grad_encoder_b = [], []
    for i in reversed(range(len(encoder_w))):
        grad = grad * (cache.encoder_pre[i] > 0)
        inputs = cache.action if i == 0 else torch.relu(cache.encoder_pre[i - 1])
        grad_encoder_w.insert(0, grad.t() @ inputs)
        grad_encoder_b.insert(0, grad.sum(0))
        grad = grad @ encoder_w[i]
    return grad_state, grad, [grad_encoder_w, grad_encoder_b, grad_trunk_w, grad_trunk_b]


def causal_weights_grad(
    grad_weights: Tensor,
    grad_effects: Tensor,
    grad_causal_mean_action: Tensor,
    grad_q_causal: Tensor,
    state: Tensor,
    neighbor_actions: Tensor,
    neighbor_mask: Tensor,
    layers: Layers,
    temperature: float,
    weighting: str,
    weight_temperature: float,
) -> tuple[Tensor, list[list[Tensor]]]:
    """Gradients to ``state`` and to each of the four layer lists."""
    batch, slots = neighbor_mask.shape
    state_dim, n_actions = state.shape[-1], layers[2][-1].shape[0]
    vectors = neighbor_action_vectors(neighbor_actions, neighbor_mask, n_actions, state.dtype)
    count = neighbor_mask.sum(-1, keepdim=True).to(state.dtype)
    mean_action = vectors.sum(1) / count.clamp_min(1)

    rows_state = state.unsqueeze(1).expand(batch, slots + 1, state_dim).reshape(-1, state_dim)
    rows_action = torch.cat([mean_action.unsqueeze(1), vectors], dim=1).reshape(-1, n_actions)
    values, interventions = _head_forward(layers, rows_state, rows_action)
    logits = values.reshape(batch, slots + 1, n_actions) / temperature
    effects = kl_from_logits(logits[:, :1], logits[:, 1:]).masked_fill(~neighbor_mask, 0.0)
    weights = combine_weights(effects, neighbor_mask, weighting, weight_temperature)
    causal_mean_action = (weights.unsqueeze(-1) * vectors).sum(1)
    _, causal = _head_forward(layers, state, causal_mean_action)

    grad_state, grad_causal, grads = _head_backward(layers, causal, grad_q_causal, state_dim)
    grad_causal = grad_causal + grad_causal_mean_action
    grad_w = grad_weights + (vectors * grad_causal.unsqueeze(1)).sum(-1)
    centred = grad_w - (weights * grad_w).sum(-1, keepdim=True)
    if weighting == "proportional":
        total = effects.sum(-1, keepdim=True)
        through_weights = torch.where(
            total > EFFECT_THRESHOLD, centred / total.clamp_min(EFFECT_THRESHOLD), 0.0
        )
    else:
        through_weights = weights * centred / weight_temperature
    grad_c = (grad_effects + through_weights).masked_fill(~neighbor_mask, 0.0).unsqueeze(-1)

    log_p = torch.log_softmax(logits[:, :1], dim=-1)
    log_q = torch.log_softmax(logits[:, 1:], dim=-1)
    grad_ref = (grad_c * log_p.exp() * (log_p - log_q - effects.unsqueeze(-1))).sum(1, keepdim=True)
    grad_neighbours = grad_c * (log_q.exp() - log_p.exp())
    grad_values = torch.cat([grad_ref, grad_neighbours], dim=1).reshape(-1, n_actions) / temperature
    rows_grad_state, _, rows_grads = _head_backward(layers, interventions, grad_values, state_dim)

    grad_state = grad_state + rows_grad_state.reshape(batch, slots + 1, state_dim).sum(1)
    grads = [[a + b for a, b in zip(ga, gb)] for ga, gb in zip(grads, rows_grads)]
    return grad_state, grads
