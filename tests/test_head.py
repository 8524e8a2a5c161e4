"""MeanFieldHead as other MFQ codebases write their networks: the settings that reproduce them
through the fused kernels, and a clear error for modules the kernels do not evaluate."""

import pytest
import torch
from helpers import make_inputs
from torch import nn

import cmfq


def port_branches(n_actions=21, state_dim=288, seed=0):
    """The mean-action branch and the final layers as the PyTorch port of MFQ writes them
    (github.com/deligentfool/mfrl_pytorch): no ReLU after the branch's last Linear."""
    torch.manual_seed(seed)
    prob_emb = nn.Sequential(nn.Linear(n_actions, 64), nn.ReLU(), nn.Linear(64, 32))
    final = nn.Sequential(
        nn.Linear(state_dim + 32, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, n_actions),
    )
    return prob_emb, final


def port_head(prob_emb, final):
    head = cmfq.MeanFieldHead(288, 21, action_relu_last=False)
    head.action_encoder.load_state_dict(prob_emb.state_dict())
    head.trunk.load_state_dict(final.state_dict())
    return head


def test_action_relu_last_false_builds_the_ports_branch():
    head = cmfq.MeanFieldHead(288, 21, action_relu_last=False)
    assert [type(m) for m in head.action_encoder] == [nn.Linear, nn.ReLU, nn.Linear]
    assert [type(m) for m in cmfq.MeanFieldHead(288, 21).action_encoder] == [
        nn.Linear, nn.ReLU, nn.Linear, nn.ReLU
    ]


def port_q_function(prob_emb, final):
    """The port's own Q(s, ., x): its final layers on [s, its mean-action branch(x)]."""
    return lambda state, x: final(torch.cat([state, prob_emb(x)], -1))


@pytest.mark.parametrize("formulation", ["per_agent", "stacked"])
def test_the_ports_weights_give_the_ports_numbers(formulation):
    """In float64 the fused op on the head and the generic path on the port's own network agree
    to rounding (the fold is exact in exact arithmetic). In float32 the head's q_causal is the
    port's forward at the causal mean action to 1e-6; the weights of small effects (a fresh
    network's are ~1e-4 nats) carry float32 rounding on either path, the fused one's no larger
    than the port's own (to a rounding of the largest value)."""
    prob_emb, final = port_branches()
    head = port_head(prob_emb, final)
    port_q = port_q_function(prob_emb, final)
    state = torch.randn(128, 288, generator=torch.Generator().manual_seed(1))
    actions = torch.randint(-1, 21, (128, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fused = cmfq.causal_weights(head, state, actions, formulation=formulation)
        assert (fused.q_causal - port_q(state, fused.causal_mean_action)).abs().max() <= 1e-6
        port = cmfq.causal_weights(port_q, state, actions, n_actions=21)
        prob_emb, final, head = prob_emb.double(), final.double(), head.double()
        exact = cmfq.causal_weights(port_q, state.double(), actions, n_actions=21)
        fused64 = cmfq.causal_weights(head, state.double(), actions, formulation=formulation)
    u = torch.finfo(torch.float32).eps / 2
    for name, a, b, c, e in zip(cmfq.CausalWeights._fields, port, fused, fused64, exact):
        torch.testing.assert_close(c, e, rtol=1e-10, atol=1e-12, msg=name)
        port_error = (a.double() - e).abs().max()
        assert (b.double() - e).abs().max() <= port_error + u * e.abs().max(), name


@pytest.mark.parametrize("formulation", ["per_agent", "stacked"])
def test_gradients_reach_both_layers_of_the_fold(formulation):
    prob_emb, final = port_branches(n_actions=5, state_dim=12)
    head = cmfq.MeanFieldHead(12, 5, action_hidden=(64, 32), action_relu_last=False).double()
    head.action_encoder.load_state_dict(prob_emb.state_dict())
    head.trunk.load_state_dict(final.state_dict())
    state, actions = make_inputs(6, 4, head)

    def grads(path):
        head.zero_grad()
        s = state.clone().requires_grad_()
        out = cmfq.causal_weights(head, s, actions, formulation=path)
        (out.q_causal.square().sum() + out.weights.square().sum()).backward()
        return [s.grad] + [p.grad.clone() for p in head.parameters()]

    for fused, reference in zip(grads(formulation), grads("generic"), strict=True):
        torch.testing.assert_close(fused, reference, rtol=1e-9, atol=1e-12)


def test_an_assigned_branch_of_linear_and_relu_is_evaluated_as_it_is():
    """Assigning the port's branch to a default head (ReLU last) makes it the port's head: the
    fused op follows the modules, not the constructor's setting."""
    prob_emb, final = port_branches(n_actions=5, state_dim=12)
    head = cmfq.MeanFieldHead(12, 5).double()
    head.action_encoder = prob_emb.double()
    state, actions = make_inputs(6, 4, head)
    fused = cmfq.causal_weights(head, state, actions)
    reference = cmfq.causal_weights(head, state, actions, formulation="generic")
    for name, a, b in zip(cmfq.CausalWeights._fields, fused, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize(
    "part, modules, message",
    [
        ("action_encoder", [nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6)], r"action_encoder\[1\]"),
        ("action_encoder", [nn.Linear(5, 6, bias=False)], r"action_encoder\[0\]"),
        ("action_encoder", [nn.Linear(5, 6), nn.ReLU(), nn.ReLU()], r"action_encoder\[2\]"),
        ("trunk", [nn.Linear(18, 5), nn.ReLU()], "must end with a Linear"),
        ("trunk", [nn.Linear(18, 16), nn.LayerNorm(16), nn.Linear(16, 5)], r"trunk\[1\]"),
    ],
)
def test_modules_the_kernels_do_not_evaluate_raise_at_the_call(part, modules, message):
    head = cmfq.MeanFieldHead(12, 5, action_hidden=(8, 6)).double()
    setattr(head, part, nn.Sequential(*modules).double())
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match=message):
        cmfq.causal_weights(head, state, actions)
    # The generic path calls the modules as they are.
    out = cmfq.causal_weights(head, state, actions, formulation="generic")
    assert out.q_causal.shape == (3, 5)


@pytest.mark.parametrize("formulation", ["per_agent", "stacked"])
@pytest.mark.parametrize(
    "action_hidden, action_scale, relu_last",
    [((), 16.0, True), ((64, 32), 16.0, True), ((8,), 16.0, False), ((), 1.0, True)],
)
def test_a_scaled_or_empty_branch_is_evaluated_with_its_gradients(
    formulation, action_hidden, action_scale, relu_last
):
    """The fused op takes ``action_scale`` folded into the first weight that reads x, and an empty
    branch (x straight into the trunk): in float64 it agrees with the head's own forward (the
    generic path) to rounding, values and gradients."""
    head = cmfq.MeanFieldHead(12, 5, action_hidden=action_hidden, action_scale=action_scale,
                              action_relu_last=relu_last).double()
    state, actions = make_inputs(6, 4, head)

    def results(path):
        head.zero_grad()
        s = state.clone().requires_grad_()
        out = cmfq.causal_weights(head, s, actions, formulation=path)
        (out.q_causal.square().sum() + out.weights.square().sum()).backward()
        return [*out, s.grad] + [p.grad.clone() for p in head.parameters()]

    for fused, reference in zip(results(formulation), results("generic"), strict=True):
        torch.testing.assert_close(fused, reference, rtol=1e-9, atol=1e-12)


def test_action_scale_scales_the_input():
    head = cmfq.MeanFieldHead(12, 5, action_scale=16.0)
    plain = cmfq.MeanFieldHead(12, 5)
    plain.load_state_dict(head.state_dict())
    state, x = torch.randn(3, 12), torch.rand(3, 5)
    torch.testing.assert_close(head(state, x), plain(state, 16.0 * x))
    with pytest.raises(ValueError, match="action_scale must be > 0"):
        cmfq.MeanFieldHead(12, 5, action_scale=0.0)
