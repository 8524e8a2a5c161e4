"""The fused op, in each formulation (per-agent kernels, stacked rows, the fused trunk on CUDA),
against the generic PyTorch path and against hand-computed values."""

import copy
import math

import pytest
import torch
from helpers import generic, make_head, make_inputs

import cmfq

HEAD_SIZES = [
    dict(state_dim=12, n_actions=5, action_hidden=(8, 6), hidden=(16, 8)),
    dict(state_dim=288, n_actions=21),  # the default MFQ battle head
    dict(state_dim=3, n_actions=4, action_hidden=(), hidden=()),  # one Linear, no encoder
    dict(state_dim=7, n_actions=9, action_hidden=(5,), hidden=(11, 6, 4)),
]


def assert_outputs_close(actual, expected, **tolerances):
    for name, a, e in zip(cmfq.CausalWeights._fields, actual, expected):
        torch.testing.assert_close(a, e, msg=lambda m, name=name: f"{name}: {m}", **tolerances)


@pytest.mark.parametrize("sizes", HEAD_SIZES, ids=lambda s: f"S{s['state_dim']}A{s['n_actions']}")
@pytest.mark.parametrize("batch,slots", [(1, 1), (7, 5), (64, 33)])
@pytest.mark.parametrize("weighting", ["proportional", "softmax"])
def test_fused_matches_generic_float64(device, sizes, batch, slots, weighting, formulation):
    head = make_head(**sizes, device=device)
    state, actions = make_inputs(batch, slots, head, device=device)
    kwargs = dict(temperature=0.3, weighting=weighting, weight_temperature=0.05)
    fused = cmfq.causal_weights(head, state, actions, **kwargs, formulation=formulation)
    reference = cmfq.causal_weights(
        generic(head), state, actions, n_actions=head.n_actions, **kwargs
    )
    assert_outputs_close(fused, reference, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("actions_as", ["indices", "distributions"])
def test_head_too_wide_for_shared_memory(device, actions_as, formulation):
    # On CUDA a 4096-wide float64 layer needs more shared memory per block than any GPU has
    # (test_kernel_plan.py): the kernel's workspace moves to global memory, same numbers.
    head = make_head(hidden=(4096,), device=device)
    state, actions = make_inputs(5, 3, head, device=device)
    mask = actions >= 0
    if actions_as == "distributions":
        actions = torch.softmax(torch.randn(5, 3, head.n_actions, dtype=torch.float64), -1)
        actions = actions.to(device)
    fused = cmfq.causal_weights(head, state, actions, mask, formulation=formulation)
    reference = cmfq.causal_weights(generic(head), state, actions, mask, n_actions=head.n_actions)
    assert_outputs_close(fused, reference, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("weighting", ["proportional", "softmax"])
def test_fused_matches_generic_on_distributions(device, weighting, formulation):
    head = make_head(device=device)
    state, actions = make_inputs(9, 6, head, device=device)
    dists = torch.softmax(3 * torch.randn(9, 6, head.n_actions, dtype=torch.float64), -1)
    mask = actions >= 0
    fused = cmfq.causal_weights(
        head, state, dists.to(device), mask, weighting=weighting, formulation=formulation
    )
    reference = cmfq.causal_weights(
        generic(head), state, dists.to(device), mask, weighting=weighting
    )
    assert_outputs_close(fused, reference, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("path", ["fused", "generic"])
def test_float32_agrees_with_float64_reference(device, path, formulation):
    head64 = make_head(state_dim=288, n_actions=21, action_hidden=(64, 32), hidden=(128, 64))
    head32 = cmfq.MeanFieldHead(288, 21).to(device)
    head32.load_state_dict(head64.state_dict())
    state, actions = make_inputs(128, 32, head64)
    reference = cmfq.causal_weights(generic(head64), state, actions, n_actions=21)
    result = cmfq.causal_weights(
        head32, state.float().to(device), actions.to(device),
        formulation=formulation if path == "fused" else "generic",
    )
    assert all(t.dtype == torch.float32 for t in result)
    for name, a, e in zip(result._fields, result, reference):
        torch.testing.assert_close(a.cpu().double(), e, rtol=2e-3, atol=2e-5, msg=name)


def test_fresh_head_float32_effects_are_accurate(formulation):
    """With a freshly initialised head the action branch barely moves Q, so the effects are small
    (here ~1e-5 nats) and a float32 difference of two evaluations of Q loses digits. The fused
    kernel propagates the change of Q itself, and stays accurate to ~1e-6 relative."""
    torch.manual_seed(0)
    head64 = cmfq.MeanFieldHead(288, 21).double()
    head32 = cmfq.MeanFieldHead(288, 21)
    head32.load_state_dict(head64.state_dict())
    state, actions = make_inputs(64, 16, head64, masked=0.0)
    reference = cmfq.causal_weights(generic(head64), state, actions, n_actions=21)
    assert 0 < reference.effects.max() < 1e-3
    fused32 = cmfq.causal_weights(head32, state.float(), actions, formulation=formulation)
    relative = (fused32.effects.double() - reference.effects).abs() / reference.effects
    assert relative.median() < 1e-5 and relative.max() < 1e-3


def test_float32_parameter_gradients_over_many_agents_are_accurate(device, formulation):
    """A parameter's gradient sums every row of every agent: here 131072 agents, about a million
    rows (n). Every ReLU is kept well inside its positive side (no kink for rounding to cross) and
    the cotangent is all ones, so that the agents' terms add up rather than cancel, and the error
    is that of the sum relative to it. The per-agent CPU kernel sums its chunks pairwise, in an
    order of its own: within 16 u log2(n) (u = eps/2; a pairwise sum is within u log2(n), and
    each term carries a few roundings of its own). Elsewhere a BLAS or cuBLAS GEMM sums the rows
    in an order of its own (blocked, running sums between blocks, varying with the CPU's vector
    width): its worst case, n u, would say nothing, but rounding errors are independent and of
    mean zero, so the error stays within lambda sqrt(n) u but with probability
    1 - 2 exp(-lambda^2 / 2) (Higham and Mary, SIAM J. Sci. Comput. 41 (2019), Theorem 2.8); here
    lambda = 6."""
    batch, slots, n_actions = 131072, 6, 5
    head64 = make_head(state_dim=8, n_actions=n_actions, action_hidden=(), hidden=(16,))
    with torch.no_grad():
        head64.trunk[0].bias.add_(24.0)  # the pre-activations stay above ~20
    state, actions = make_inputs(batch, slots, head64)

    def gradients(head, s, a, path):
        s = s.clone().requires_grad_()
        out = cmfq.causal_weights(head, s, a, temperature=1.0, formulation=path)
        return torch.autograd.grad(out.q_causal.sum(), list(head.parameters()))

    expected = gradients(head64, state, actions, "generic")
    head32 = copy.deepcopy(head64).to(device=device, dtype=torch.float32)
    actual = gradients(head32, state.to(device, torch.float32), actions.to(device), formulation)
    u, rows = torch.finfo(torch.float32).eps / 2, batch * (slots + 2)
    if formulation == "per_agent" and device == "cpu":
        limit = 16 * u * math.log2(rows)
    else:
        limit = 6 * math.sqrt(rows) * u
    for i, (a, e) in enumerate(zip(actual, expected)):
        error = float((a.cpu().double() - e).norm() / e.norm())
        assert error <= limit, f"parameter {i}: relative L2 error {error:.1e} > {limit:.1e}"


def _hand_computed_case():
    """Q(s, x) = W [s, x] + b with one state feature and two actions, two neighbours."""
    head = cmfq.MeanFieldHead(1, 2, action_hidden=(), hidden=()).double()
    with torch.no_grad():
        head.trunk[0].weight.copy_(
            torch.tensor([[0.5, 1.0, -1.0], [-0.25, 0.0, 2.0]], dtype=torch.float64)
        )
        head.trunk[0].bias.copy_(torch.tensor([0.1, -0.2], dtype=torch.float64))

    def q(s, x0, x1):
        return [0.5 * s + 1.0 * x0 - 1.0 * x1 + 0.1, -0.25 * s + 2.0 * x1 - 0.2]

    def policy(values, tau):
        z = [math.exp(v / tau) for v in values]
        return [v / sum(z) for v in z]

    s, tau = 0.8, 0.5
    p_mean = policy(q(s, 0.5, 0.5), tau)
    effects = []
    for x in ([1.0, 0.0], [0.0, 1.0]):
        p_k = policy(q(s, *x), tau)
        effects.append(sum(p * math.log(p / pk) for p, pk in zip(p_mean, p_k)))
    weights = [c / sum(effects) for c in effects]
    causal = weights  # e(0) = [1, 0], e(1) = [0, 1]
    return head, s, tau, effects, weights, causal, q(s, *causal)


def test_hand_computed_two_neighbours(device, formulation):
    head, s, tau, effects, weights, causal, q_causal = _hand_computed_case()
    head = head.to(device)
    state = torch.tensor([[s]], dtype=torch.float64, device=device)
    actions = torch.tensor([[0, 1]], device=device)
    for q, path in ((head, formulation), (generic(head), "generic")):
        out = cmfq.causal_weights(
            q, state, actions, temperature=tau, n_actions=2, formulation=path
        )
        expected = [weights, effects, [0.5, 0.5], causal, q_causal]
        for name, actual, value in zip(out._fields, out, expected):
            torch.testing.assert_close(
                actual.cpu(),
                torch.tensor([value], dtype=torch.float64),
                rtol=1e-10,
                atol=0,
                msg=lambda m, name=name: f"{name}: {m}",
            )


def test_weights_are_a_distribution_over_valid_neighbours(device, formulation):
    head = make_head(device=device)
    state, actions = make_inputs(32, 7, head, masked=0.5, device=device)
    actions[0] = -1
    for weighting in ("proportional", "softmax"):
        out = cmfq.causal_weights(
            head, state, actions, weighting=weighting, formulation=formulation
        )
        valid = actions >= 0
        assert torch.all(out.weights[~valid] == 0) and torch.all(out.effects[~valid] == 0)
        assert torch.all(out.effects >= 0)
        sums = out.weights.sum(1)
        torch.testing.assert_close(sums[valid.any(1)], torch.ones_like(sums[valid.any(1)]))
        assert sums[0] == 0


def test_repeated_actions_share_one_effect(device, formulation):
    """Neighbours with the same action are the same intervention."""
    head = make_head(device=device)
    state, _ = make_inputs(1, 1, head, device=device)
    actions = torch.tensor([[2, 0, 2, 2, 0]], device=device)
    out = cmfq.causal_weights(head, state, actions, formulation=formulation)
    assert out.effects[0, 0] == out.effects[0, 2] == out.effects[0, 3]
    assert out.effects[0, 1] == out.effects[0, 4]


def test_quickstart_default_head():
    head = cmfq.MeanFieldHead(288, 21)
    state = torch.randn(4, 288)
    actions = torch.randint(0, 21, (4, 8))
    out = cmfq.causal_weights(head, state, actions, temperature=0.1)
    torch.testing.assert_close(out.weights.sum(1), torch.ones(4))
    assert out.q_causal.shape == (4, 21) and out.causal_mean_action.shape == (4, 21)


@pytest.mark.skipif(
    not (torch.cuda.is_available() and cmfq.cuda_built()), reason="needs the CUDA kernel"
)
def test_cuda_graph_captures_and_replays(formulation):
    """Nothing in the CUDA op waits for the GPU, so a CUDA graph can capture it."""
    head = make_head(dtype=torch.float32, device="cuda")
    state, actions = make_inputs(32, 8, head, device="cuda")
    static_state = state.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(side):
        # A warm-up, as capture wants.
        cmfq.causal_weights(head, static_state, actions, formulation=formulation)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        captured = cmfq.causal_weights(head, static_state, actions, formulation=formulation)
    static_state.copy_(2 * state)
    graph.replay()
    with torch.no_grad():
        expected = cmfq.causal_weights(head, 2 * state, actions, formulation=formulation)
    assert_outputs_close(captured, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(
    not (torch.cuda.is_available() and cmfq.cuda_built()), reason="needs the CUDA kernel"
)
@pytest.mark.parametrize("actions_as", ["indices", "distributions"])
@pytest.mark.parametrize(
    "hidden,fits",
    [((128, 64), True), ((16, 8), True), ((256, 64), False), ((128, 64, 32), False)],
    ids=["default", "small", "too-wide", "three-layers"],
)
def test_fused_trunk_runs_where_the_head_fits(hidden, fits, actions_as):
    """formulation="fused_trunk" runs the trunk in one launch for float32 heads with two layers
    after the first (H1 <= 128, H2 <= 64, A <= 32) and the unfused steps for the others: the same
    numbers as the unfused steps up to float32 rounding of sums in another order."""
    head = make_head(state_dim=288, n_actions=21, hidden=hidden, dtype=torch.float32, device="cuda")
    state, actions = make_inputs(300, 32, head, device="cuda")
    mask = actions >= 0
    if actions_as == "distributions":
        actions = torch.softmax(torch.randn(300, 32, 21, device="cuda"), -1)
    unfused = cmfq.causal_weights(head, state, actions, mask, temperature=0.3,
                                  formulation="stacked")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        fused = cmfq.causal_weights(head, state, actions, mask, temperature=0.3,
                                    formulation="fused_trunk")
        torch.cuda.synchronize()
    assert any("fused_trunk" in event.name for event in profile.events()) == fits
    assert_outputs_close(fused, unfused, rtol=1e-4, atol=1e-6)
