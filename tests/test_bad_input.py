"""docs/spec.md's bad-input rules, one test each, for the fused and the generic path; and the edge
cases that are valid (empty batch, no neighbours, NaN, strided inputs)."""

import math

import numpy as np
import pytest
import torch
from helpers import generic, make_head, make_inputs

import cmfq

# The fused op in its per-agent and stacked formulations, and the generic path (a plain callable).
PATHS = ["per_agent", "stacked", "generic"]


@pytest.fixture
def head():
    return make_head()


def call(path, head, state, actions, mask=None, **kwargs):
    if path == "generic":
        return cmfq.causal_weights(generic(head), state, actions, mask, n_actions=head.n_actions,
                                   **kwargs)
    return cmfq.causal_weights(head, state, actions, mask, formulation=path, **kwargs)


@pytest.fixture(params=PATHS)
def path(request):
    return request.param


def test_state_wrong_rank(path, head):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match=r"state must have shape \[B, S\]"):
        call(path, head, state[0], actions)


def test_state_wrong_width_for_head(head):
    _, actions = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match="state_dim"):
        cmfq.causal_weights(head, torch.randn(3, head.state_dim + 1, dtype=torch.float64), actions)


def test_actions_wrong_rank(path, head):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match=r"integer neighbor_actions must have shape \[B, K\]"):
        call(path, head, state, actions[:, :, None].expand(3, 2, head.n_actions))


def test_distributions_wrong_width(path, head):
    state, _ = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match="last dimension 6|A = 5"):
        call(path, head, state, torch.rand(3, 2, head.n_actions + 1, dtype=torch.float64))


def test_mismatched_batch(path, head):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match="batch size 2 but state has 3"):
        call(path, head, state, actions[:2])


def test_mask_wrong_shape(path, head):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match="neighbor_mask must have shape"):
        call(path, head, state, actions, torch.ones(3, 3, dtype=torch.bool))


def test_mask_not_bool(path, head):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(TypeError, match="neighbor_mask must be a bool tensor"):
        call(path, head, state, actions, torch.ones(3, 2))


@pytest.mark.parametrize("bad_action", [-1, 5, 100])
def test_action_out_of_range_where_mask_is_true(path, head, bad_action):
    state, actions = make_inputs(3, 2, head, masked=0.0)
    actions[1, 1] = bad_action
    with pytest.raises(ValueError, match=f"holds {bad_action} where neighbor_mask is true"):
        call(path, head, state, actions, torch.ones(3, 2, dtype=torch.bool))


def test_out_of_range_action_where_mask_is_false_is_ignored(path, head):
    state, actions = make_inputs(3, 2, head, masked=0.0)
    mask = torch.ones(3, 2, dtype=torch.bool)
    actions[1, 1], mask[1, 1] = 99, False
    out = call(path, head, state, actions, mask)
    assert out.weights[1, 1] == 0 and out.weights[1, 0] == 1


@pytest.mark.skipif(
    not (torch.cuda.is_available() and cmfq.cuda_built()), reason="needs the CUDA kernel"
)
@pytest.mark.parametrize("bad_action", [-1, 5])
def test_out_of_range_action_on_cuda_gives_that_agent_nan(head, bad_action, formulation):
    # Checking on the host would wait for the GPU on every call: the kernel refuses the agent.
    head = head.to("cuda")
    state, actions = make_inputs(3, 2, head, masked=0.0, device="cuda")
    actions[1, 1] = bad_action
    everyone = torch.ones_like(actions, dtype=torch.bool)
    out = cmfq.causal_weights(head, state, actions, everyone, formulation=formulation)
    clean = cmfq.causal_weights(head, state[[0, 2]], actions[[0, 2]], formulation=formulation)
    for name, a, b in zip(out._fields, out, clean):
        assert torch.isnan(a[1]).all(), name
        torch.testing.assert_close(a[[0, 2]], b, msg=name)


@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan, math.inf])
def test_bad_temperature(path, head, tau):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        call(path, head, state, actions, temperature=tau)


@pytest.mark.parametrize("tau", [0.0, math.nan])
def test_bad_weight_temperature(path, head, tau):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match="weight_temperature must be finite and > 0"):
        call(path, head, state, actions, weighting="softmax", weight_temperature=tau)


def test_unknown_weighting(path, head):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match="weighting must be one of"):
        call(path, head, state, actions, weighting="attention")


def test_tensors_on_different_devices(path, head):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match="neighbor_actions is on meta but state is on cpu"):
        call(path, head, state, actions.to("meta"))


def test_unsupported_state_dtype(path, head):
    _, actions = make_inputs(3, 2, head)
    with pytest.raises(TypeError, match="state must be a floating-point tensor"):
        call(path, head, torch.ones(3, head.state_dim, dtype=torch.int64), actions)


def test_unsupported_action_dtype(path, head):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(TypeError, match="neighbor_actions must be integer indices or float"):
        call(path, head, state, actions.to(torch.complex64))


def test_head_dtype_mismatch(head):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(TypeError, match="head's parameters are torch.float64"):
        cmfq.causal_weights(head, state.float(), actions)


def test_callable_without_n_actions(head):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(ValueError, match="n_actions is required"):
        cmfq.causal_weights(generic(head), state, actions)


def test_not_a_q_function(head):
    state, actions = make_inputs(3, 2, head)
    with pytest.raises(TypeError, match="q must be a cmfq.MeanFieldHead or a callable"):
        cmfq.causal_weights("head", state, actions, n_actions=5)


def test_direct_op_call_validates_too(head):
    state, actions = make_inputs(3, 2, head)
    actions[0, 0] = 7
    layers = head.linear_layers()
    with pytest.raises(ValueError, match="holds 7 where neighbor_mask is true"):
        torch.ops.cmfq.causal_weights(
            state, actions, actions >= -1, *layers, 0.1, "proportional", 1.0
        )
    with pytest.raises(ValueError, match="weighting must be"):
        torch.ops.cmfq.causal_weights(state, actions, actions >= 0, *layers, 0.1, "max", 1.0)
    with pytest.raises(ValueError, match="trunk_weights"):
        torch.ops.cmfq.causal_weights(
            state[:, :-1], actions, actions >= 0, *layers, 0.1, "proportional", 1.0
        )


def test_empty_batch(path, head, device):
    head = head.to(device)
    out = call(
        path,
        head,
        torch.zeros(0, head.state_dim, dtype=torch.float64, device=device),
        torch.zeros(0, 4, dtype=torch.long, device=device),
    )
    assert [tuple(t.shape) for t in out] == [(0, 4), (0, 4), (0, 5), (0, 5), (0, 5)]


def test_no_neighbour_slots(path, head, device):
    head = head.to(device)
    state, _ = make_inputs(3, 1, head, device=device)
    out = call(path, head, state, torch.zeros(3, 0, dtype=torch.long, device=device))
    assert out.weights.shape == (3, 0) and torch.all(out.mean_action == 0)
    torch.testing.assert_close(out.q_causal, head(state, torch.zeros_like(out.mean_action)))


def test_all_neighbours_masked(path, head, device):
    head = head.to(device)
    state, actions = make_inputs(3, 4, head, masked=1.0, device=device)
    out = call(path, head, state, actions)
    assert torch.all(out.weights == 0) and torch.all(out.effects == 0)
    assert torch.all(out.causal_mean_action == 0)
    torch.testing.assert_close(out.q_causal, head(state, torch.zeros_like(out.mean_action)))


@pytest.mark.parametrize("weighting", ["proportional", "softmax"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_state_makes_its_row_nan(path, head, device, bad, weighting):
    """No host sync to check the state: the row's weights, effects, causal mean action and values
    are NaN (never the valid-looking uniform weights), the other rows as without it."""
    head = head.to(device)
    state, actions = make_inputs(4, 3, head, masked=0.0, device=device)
    state[2, 0] = bad
    out = call(path, head, state, actions, weighting=weighting)
    clean = call(path, head, state[[0, 1, 3]], actions[[0, 1, 3]], weighting=weighting)
    for name in ("weights", "effects", "causal_mean_action", "q_causal"):
        assert torch.isnan(getattr(out, name)[2]).all(), name
    for name, a, b in zip(out._fields, out, clean):
        torch.testing.assert_close(a[[0, 1, 3]], b, msg=name)


def test_a_non_finite_distribution_makes_its_row_nan(path, head, device):
    head = head.to(device)
    state, _ = make_inputs(3, 2, head, device=device)
    dists = torch.full((3, 2, head.n_actions), 1 / head.n_actions, dtype=torch.float64)
    dists[1, 0, 2] = math.nan
    out = call(path, head, state, dists.to(device))
    for name, value in zip(out._fields, out):
        assert not torch.isnan(value[[0, 2]]).any(), name
        # The plain mean is NaN in the entry the NaN is in; the rest of the row in every entry.
        assert torch.isnan(value[1]).sum() == (1 if name == "mean_action" else value.shape[1]), name


def test_check_mode_raises_on_non_finite_and_improper_inputs(path, head):
    state, actions = make_inputs(3, 2, head, masked=0.0)
    dists = torch.softmax(torch.randn(3, 2, head.n_actions, dtype=torch.float64), -1)
    assert call(path, head, state, dists, check=True).weights.shape == (3, 2)
    bad_state = state.clone()
    bad_state[1, 0] = math.inf
    with pytest.raises(ValueError, match="state row 1 holds a NaN or an infinity"):
        call(path, head, bad_state, actions, check=True)
    cases = {
        "holds a NaN or an infinity": (0, 1, 0, math.nan),
        "holds a negative entry": (2, 0, 1, -0.5),
        "holds a vector whose sum is not 1": (1, 1, 3, 2.0),
    }
    for message, (b, k, a, value) in cases.items():
        improper = dists.clone()
        improper[b, k, a] = value
        with pytest.raises(ValueError, match=f"neighbor_actions row {b} {message}"):
            call(path, head, state, improper, check=True)
        # Where the mask is false the vector is not used, and not checked.
        mask = torch.ones(3, 2, dtype=torch.bool)
        mask[b, k] = False
        call(path, head, state, improper, mask, check=True)


def test_numpy_numbers_are_taken_as_python_ones(path, head):
    state, actions = make_inputs(3, 2, head)
    expected = call(path, head, state, actions, temperature=0.3)
    out = cmfq.causal_weights(
        generic(head) if path == "generic" else head, state, actions,
        n_actions=np.int32(head.n_actions), temperature=np.float32(0.3),
        weight_temperature=np.float64(1.0),
        formulation="auto" if path == "generic" else path,
    )
    for name, a, b in zip(out._fields, out, expected):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(TypeError, match="n_actions must be an int"):
        cmfq.causal_weights(generic(head), state, actions, n_actions=5.0)
    assert cmfq.MeanFieldHead(np.int64(4), np.int32(21), (np.int16(8),), ()).n_actions == 21


def test_non_contiguous_and_expanded_inputs(path, head, device):
    head = head.to(device)
    state, actions = make_inputs(6, 8, head, device=device)
    strided_state = torch.cat([state, state], dim=1)[:, ::2]
    strided_actions = actions.t().contiguous().t()
    expanded_state = state[:1].expand(6, -1)
    assert not strided_state.is_contiguous() and not strided_actions.is_contiguous()
    for s, a in ((strided_state, strided_actions), (expanded_state, actions)):
        out = call(path, head, s, a)
        dense = call(path, head, s.contiguous(), a.contiguous())
        for name, x, y in zip(out._fields, out, dense):
            torch.testing.assert_close(x, y, msg=name)
