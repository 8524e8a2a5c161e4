"""The gradient of ``cmfq::causal_weights`` in PyTorch ops, the backward on devices without a
backward kernel (CUDA; the CPU has ``cmfq::causal_weights_backward``, which computes the same chain
rule in C++). Given the forward's weights, effects and causal mean action, it re-evaluates
the head from the saved inputs, factored as the kernels are
(the first trunk layer is W1 [s; enc(x)] + b1 = state_proj(s) + action_proj(x)): the state half
once per agent, the action half once per action input (the A one-hot actions, or each neighbour's
distribution), then the rest of the trunk on rows of (agent, action) when K >= A one-hot actions,
else of (agent, neighbour slot). The chain rule then runs backwards by hand:

    q_causal = Q(s, ǎ)                    -> grads to s, the head, and ǎ
    ǎ = sum_k w_k e(a_k)                  -> dL/dw_k += <dL/dǎ, e(a_k)>
    w = c / sum c   or   softmax(c / τ_w) -> dL/dc  (no gradient where the weights are uniform)
    c_k = KL(softmax(u_0) || softmax(u_k)), u = Q / τ:
        dc_k/du_k = softmax(u_k) - p,  dc_k/du_0 = p * (log p - log softmax(u_k) - c_k)
    u_0 = Q(s, ā) / τ,  u_k = Q(s, e(a_k)) / τ  -> grads to s and the head
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from cmfq.op.divergence import EFFECT_THRESHOLD
from cmfq.op.generic import neighbor_action_vectors

Layers = tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]


def _relu_backward(grad: Tensor, activation: Tensor) -> Tensor:
    """The gradient through a ReLU, given its output (aten's own fused kernel)."""
    return torch.ops.aten.threshold_backward(grad, activation, 0)


def _action_proj(layers: Layers, state_dim: int, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """W1's action columns applied to enc(x); returns it and the encoder's inputs and output."""
    encoder_w, encoder_b, trunk_w, _ = layers
    activations = [x]
    for w, b in zip(encoder_w, encoder_b):
        activations.append(torch.relu(F.linear(activations[-1], w, b)))
    return F.linear(activations[-1], trunk_w[0][:, state_dim:]), activations


def _action_proj_backward(
    layers: Layers, state_dim: int, activations: list[Tensor], grad: Tensor
) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor]:
    """(grad of x, grads of the encoder's weights and biases, grad of W1's action columns)."""
    encoder_w, _, trunk_w, _ = layers
    grad_w1_action = grad.t() @ activations[-1]
    grad = grad @ trunk_w[0][:, state_dim:]
    grad_w, grad_b = [], []
    for i in reversed(range(len(encoder_w))):
        grad = _relu_backward(grad, activations[i + 1])
        grad_w.insert(0, grad.t() @ activations[i])
        grad_b.insert(0, grad.sum(0))
        grad = grad @ encoder_w[i]
    return grad, grad_w, grad_b, grad_w1_action


def _trunk_rest(layers: Layers, first: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The values from the first trunk layer's pre-activation, and each later layer's input."""
    _, _, trunk_w, trunk_b = layers
    values, activations = first, []
    for w, b in zip(trunk_w[1:], trunk_b[1:]):
        activations.append(torch.relu(values))
        values = F.linear(activations[-1], w, b)
    return values, activations


def _trunk_rest_backward(
    layers: Layers, activations: list[Tensor], grad: Tensor
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """(grad of the first layer's pre-activation, grads of the later layers' weights, biases)."""
    trunk_w = layers[2]
    grad_w, grad_b = [], []
    for i in reversed(range(len(activations))):
        grad_w.insert(0, grad.t() @ activations[i])
        grad_b.insert(0, grad.sum(0))
        grad = _relu_backward(grad @ trunk_w[i + 1], activations[i])
    return grad, grad_w, grad_b


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
    weights: Tensor,
    effects: Tensor,
    causal_mean_action: Tensor,
) -> tuple[Tensor, list[list[Tensor]]]:
    """Gradients to ``state`` and to each of the four layer lists, given the forward's outputs."""
    encoder_w, encoder_b, trunk_w, trunk_b = layers
    batch, slots = neighbor_mask.shape
    state_dim, n_actions = state.shape[-1], trunk_w[-1].shape[0]
    one_hot = not neighbor_actions.is_floating_point()
    vectors, mean_action = neighbor_action_vectors(
        neighbor_actions, neighbor_mask, n_actions, state.dtype
    )

    # Forward, factored; each agent's reference row first, then its rows: one per one-hot action
    # (shared by all agents) where that is fewer than one per neighbour slot.
    state_proj = F.linear(state, trunk_w[0][:, :state_dim], trunk_b[0])
    inputs = torch.eye(n_actions, dtype=state.dtype, device=state.device) if one_hot else vectors
    inputs = inputs.reshape(-1, n_actions)
    proj_inputs, inputs_activations = _action_proj(layers, state_dim, inputs)
    proj_mean, mean_activations = _action_proj(layers, state_dim, mean_action)
    index = neighbor_actions.clamp(0, n_actions - 1).long() if one_hot else None
    by_action = one_hot and slots >= n_actions
    if by_action:
        rows = proj_inputs.unsqueeze(0)
    elif one_hot:
        rows = proj_inputs[index]
    else:
        rows = proj_inputs.reshape(batch, slots, -1)
    first = torch.cat([(state_proj + proj_mean).unsqueeze(1), state_proj.unsqueeze(1) + rows], 1)
    values, rows_activations = _trunk_rest(layers, first.reshape(-1, first.shape[-1]))
    logits = values.reshape(batch, -1, n_actions) / temperature
    if by_action:
        # Each row's effect is that of every valid neighbour that took its action (masked slots
        # hold 0 <= any effect, so the maximum ignores them); rows of actions that no valid
        # neighbour took get no gradient, so their value does not matter.
        row_effects = torch.zeros_like(logits[:, 1:, 0]).scatter_reduce_(
            1, index, effects, reduce="amax"
        )
    else:
        row_effects = effects
    proj_causal, causal_activations = _action_proj(layers, state_dim, causal_mean_action)
    _, causal_rest = _trunk_rest(layers, state_proj + proj_causal)

    # Backward through q_causal = Q(s, ǎ).
    grad_first_c, grad_trunk_w, grad_trunk_b = _trunk_rest_backward(
        layers, causal_rest, grad_q_causal
    )
    grad_causal, grad_enc_w, grad_enc_b, grad_w1_action = _action_proj_backward(
        layers, state_dim, causal_activations, grad_first_c
    )
    grad_state_proj = grad_first_c

    # Through ǎ = sum_k w_k e(a_k) and the weights, to the effects.
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
    grad_c = (grad_effects + through_weights).masked_fill(~neighbor_mask, 0.0)
    if by_action:
        grad_c = torch.zeros_like(row_effects).scatter_add_(1, index, grad_c)

    # Through the KLs to the values of every row, and back through the trunk.
    grad_c = grad_c.unsqueeze(-1)
    log_p = torch.log_softmax(logits[:, :1], dim=-1)
    log_q = torch.log_softmax(logits[:, 1:], dim=-1)
    grad_ref = (grad_c * log_p.exp() * (log_p - log_q - row_effects.unsqueeze(-1))).sum(1)
    grad_rows = grad_c * (log_q.exp() - log_p.exp())
    grad_values = torch.cat([grad_ref.unsqueeze(1), grad_rows], 1) / temperature
    grad_first, rows_trunk_w, rows_trunk_b = _trunk_rest_backward(
        layers, rows_activations, grad_values.reshape(-1, n_actions)
    )
    grad_first = grad_first.reshape(batch, -1, grad_first.shape[-1])
    grad_state_proj = grad_state_proj + grad_first.sum(1)
    grad_rows_proj = grad_first[:, 1:]
    if by_action:
        grad_rows_proj = grad_rows_proj.sum(0)
    elif one_hot:
        grad_rows_proj = torch.zeros_like(proj_inputs).index_add_(
            0, index.reshape(-1), grad_rows_proj.reshape(-1, grad_rows_proj.shape[-1])
        )
    else:
        grad_rows_proj = grad_rows_proj.reshape(-1, grad_rows_proj.shape[-1])
    _, inputs_enc_w, inputs_enc_b, inputs_w1_action = _action_proj_backward(
        layers, state_dim, inputs_activations, grad_rows_proj
    )
    _, mean_enc_w, mean_enc_b, mean_w1_action = _action_proj_backward(
        layers, state_dim, mean_activations, grad_first[:, 0]
    )

    # Through the state half of the first layer.
    grad_state = grad_state_proj @ trunk_w[0][:, :state_dim]
    grad_w1 = torch.cat(
        [grad_state_proj.t() @ state, grad_w1_action + inputs_w1_action + mean_w1_action], dim=1
    )
    grads = [
        [a + b + c for a, b, c in zip(grad_enc_w, inputs_enc_w, mean_enc_w)],
        [a + b + c for a, b, c in zip(grad_enc_b, inputs_enc_b, mean_enc_b)],
        [grad_w1] + [a + b for a, b in zip(grad_trunk_w, rows_trunk_w)],
        [grad_state_proj.sum(0)] + [a + b for a, b in zip(grad_trunk_b, rows_trunk_b)],
    ]
    return grad_state, grads
