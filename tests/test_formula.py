"""The op against docs/spec.md's definitions, written here agent by agent in float64, sharing no
code with the op's two paths: the head as its Linear and ReLU layers, the KL as Σ p (log p − log q),
the weights, the uniform fallback and the causal mean as the spec states them."""

import math

import pytest
import torch
from helpers import forward_error_bound, make_head, make_inputs

import cmfq

THRESHOLD = 1e-6
"""Nats: below this total effect the proportional weights are uniform (docs/spec.md, Weights)."""


def q_values(head, s, x):
    """Q(s, ·, x) of one agent: encoder Linear+ReLU layers on x, then the trunk on [s, enc(x)],
    ReLU between its layers, none after the last."""
    enc_w, enc_b, trunk_w, trunk_b = (
        [t.detach().double().cpu() for t in ts] for ts in head.linear_layers()
    )
    h = x
    for w, b in zip(enc_w, enc_b, strict=True):
        h = torch.clamp(w @ h + b, min=0)
    h = torch.cat([s, h])
    for i, (w, b) in enumerate(zip(trunk_w, trunk_b, strict=True)):
        h = w @ h + b
        if i < len(trunk_w) - 1:
            h = torch.clamp(h, min=0)
    return h


def log_policy(values, temperature):
    """log softmax(values / temperature)."""
    z = values / temperature
    z = z - z.max()
    return z - torch.exp(z).sum().log()


def spec_formula(head, state, vectors, mask, temperature, weighting, weight_temperature):
    """(weights, effects, mean_action, causal_mean_action, q_causal), one agent at a time;
    ``vectors`` [B, K, A] holds e(a_k)."""
    batch, slots, n_actions = vectors.shape
    f64 = dict(dtype=torch.float64)
    out = [torch.zeros(batch, slots, **f64), torch.zeros(batch, slots, **f64)]
    out += [torch.zeros(batch, n_actions, **f64) for _ in range(3)]
    for i in range(batch):
        s = state[i].double().cpu()
        valid = [k for k in range(slots) if mask[i, k]]
        e = {k: vectors[i, k].double().cpu() for k in valid}
        mean = sum(e.values()) / len(valid) if valid else torch.zeros(n_actions, **f64)
        log_p = log_policy(q_values(head, s, mean), temperature)
        effects = {}
        for k in valid:
            log_q = log_policy(q_values(head, s, e[k]), temperature)
            effects[k] = max(0.0, float((log_p.exp() * (log_p - log_q)).sum()))
        total = sum(effects.values())
        if not valid:
            weights = {}
        elif weighting == "softmax":
            top = max(effects.values())
            exps = {k: math.exp((c - top) / weight_temperature) for k, c in effects.items()}
            weights = {k: v / sum(exps.values()) for k, v in exps.items()}
        elif total > THRESHOLD:
            weights = {k: c / total for k, c in effects.items()}
        else:
            weights = {k: 1 / len(valid) for k in valid}
        causal_mean = sum((weights[k] * e[k] for k in valid), torch.zeros(n_actions, **f64))
        for k in valid:
            out[0][i, k], out[1][i, k] = weights[k], effects[k]
        out[2][i], out[3][i] = mean, causal_mean
        out[4][i] = q_values(head, s, causal_mean)
    return out


def one_hot(actions, mask, n_actions):
    return torch.nn.functional.one_hot(actions.clamp(min=0).cpu(), n_actions).double() * (
        mask.cpu().unsqueeze(-1))


def assert_matches_formula(out, expected, rtol=1e-9, atol=1e-12):
    for name, actual, wanted in zip(cmfq.CausalWeights._fields, out, expected, strict=True):
        torch.testing.assert_close(actual.detach().double().cpu(), wanted, rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")


SIZES = {
    "one layer each": dict(action_hidden=(8,), hidden=()),
    "deep": dict(action_hidden=(8, 6), hidden=(16, 8, 4)),
    "no encoder": dict(action_hidden=(), hidden=(10,)),
}


@pytest.mark.parametrize("sizes", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("weighting", ["proportional", "softmax"])
@pytest.mark.parametrize("q_is_head", [True, False], ids=["fused", "generic"])
def test_index_actions_with_masks(device, sizes, weighting, q_is_head):
    head = make_head(**sizes, device=device)
    state, actions = make_inputs(6, 5, head, masked=0.3, device=device)
    actions[0] = -1  # an agent without neighbours
    mask = actions >= 0
    kwargs = dict(temperature=0.3, weighting=weighting, weight_temperature=0.05)
    q = head if q_is_head else (lambda s, x: head(s, x))
    out = cmfq.causal_weights(q, state, actions, n_actions=head.n_actions, **kwargs)
    expected = spec_formula(head, state, one_hot(actions, mask, head.n_actions), mask.cpu(),
                            **kwargs)
    assert_matches_formula(out, expected)
    assert torch.all(out.weights[0] == 0) and torch.all(out.causal_mean_action[0] == 0)


@pytest.mark.parametrize("weighting", ["proportional", "softmax"])
def test_distributions(device, weighting):
    head = make_head(device=device)
    generator = torch.Generator().manual_seed(3)
    dists = torch.softmax(2 * torch.randn(5, 4, head.n_actions, generator=generator,
                                          dtype=torch.float64), -1)
    state = torch.randn(5, head.state_dim, generator=generator, dtype=torch.float64)
    mask = torch.rand(5, 4, generator=generator) > 0.25
    kwargs = dict(temperature=0.5, weighting=weighting, weight_temperature=0.1)
    out = cmfq.causal_weights(head, state.to(device), dists.to(device), mask.to(device),
                              **kwargs)
    expected = spec_formula(head, state, dists * mask.unsqueeze(-1), mask, **kwargs)
    assert_matches_formula(out, expected)


def test_neighbours_sharing_one_action_get_uniform_weights(device):
    """When every valid neighbour took one action, the mean action is that action's one-hot
    vector, exactly (k ones over k), so each neighbour's intervention is the mean itself and its
    effect is 0 in exact arithmetic. The kernels evaluate the two sides in different orders
    (a table of the one-hot actions, the mean's own product), so each action value of either side
    may be off by its rounding bound delta_a (helpers.forward_error_bound), the logit change d by
    2 delta_a / tau, and the KL, at most (max d - min d)^2 / 8 by Hoeffding's lemma, by
    max |d|^2 / 2: an effect that small, far below the threshold, and uniform weights."""
    head = make_head(device=device)
    state, _ = make_inputs(3, 4, head, device=device)
    actions = torch.tensor([[2, 2, 2, 2], [1, 1, -1, 1], [4, -1, -1, -1]], device=device)
    tau = 0.1
    out = cmfq.causal_weights(head, state, actions, temperature=tau)
    mask = (actions >= 0).cpu()
    vectors = one_hot(actions, mask, head.n_actions)
    own_action = vectors.sum(1) / mask.sum(1, keepdim=True)
    delta = forward_error_bound(head.cpu(), state.cpu(), own_action)
    bound = (2 * delta.amax(-1) / tau) ** 2 / 2
    assert torch.all(out.effects.cpu() <= bound.unsqueeze(-1)), (out.effects, bound)
    assert bound.max() < THRESHOLD / 1e6
    assert_matches_formula(out, spec_formula(head, state, vectors, mask, tau, "proportional", 1.0))
    torch.testing.assert_close(out.weights.cpu(), mask.double() / mask.sum(1, keepdim=True))


def _small_effect_case(device, action_scale):
    """Two agents whose neighbours' effects sum to a tiny total set by ``action_scale``."""
    head = make_head(action_scale=action_scale, device=device)
    state, _ = make_inputs(2, 3, head, device=device)
    actions = torch.tensor([[0, 1, 3], [2, 4, -1]], device=device)
    return head, state, actions


@pytest.mark.parametrize("side", ["below", "above"])
def test_the_uniform_fallback_at_the_threshold(device, side):
    # The logit changes grow about as the cube of the scale of the action branch's three Linears
    # (two encoder layers and the trunk's action half), the effects as its sixth power: find the
    # scale at which agent 0's total effect is the threshold, then step a little below or above.
    scale = 0.1
    for _ in range(4):
        head, state, actions = _small_effect_case(device, scale)
        total = float(cmfq.causal_weights(head, state, actions).effects[0].detach().sum())
        scale *= (THRESHOLD / total) ** (1 / 6)
    scale *= 0.95 if side == "below" else 1.05
    head, state, actions = _small_effect_case(device, scale)
    out = cmfq.causal_weights(head, state, actions)
    mask = (actions >= 0).cpu()
    expected = spec_formula(head, state, one_hot(actions, mask, head.n_actions), mask, 0.1,
                            "proportional", 1.0)
    assert (float(expected[1][0].sum()) > THRESHOLD) == (side == "above")
    assert_matches_formula(out, expected, rtol=1e-6)
    uniform = torch.allclose(out.weights[0].cpu(), torch.full((3,), 1 / 3, dtype=torch.float64))
    assert uniform == (side == "below")


def test_no_gradient_flows_through_uniform_fallback_weights(device):
    head, state, actions = _small_effect_case(device, 0.01)  # every total far below threshold
    state.requires_grad_(True)
    out = cmfq.causal_weights(head, state, actions)
    assert torch.all(out.effects.sum(1) < THRESHOLD)
    (grad,) = torch.autograd.grad(out.q_causal.sum(), state)
    # With the weights fixed at uniform, ǎ is a constant: the gradient is Q's at that input.
    fixed = out.causal_mean_action.detach()
    (expected,) = torch.autograd.grad(head(state, fixed).sum(), state)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
