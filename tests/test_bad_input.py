"""docs/spec.md's bad-input rules, one test each, for the fused and the generic path; and the edge
cases that are valid (empty batch, no neighbours, NaN, strided inputs)."""

import math

import pytest
import torch
from helpers import generic, make_head, make_inputs

import cmfq

# "stacked": the fused op in its stacked formulation (CMFQ_STACKED=1).
PATHS = ["fused", "stacked", "generic"]


@pytest.fixture
def head():
    return make_head()


def call(path, head, state, actions, mask=None, **kwargs):
    q = generic(head) if path == "generic" else head
    return cmfq.causal_weights(q, state, actions, mask, n_actions=head.n_actions, **kwargs)


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    monkeypatch.setenv("CMFQ_STACKED", "1" if request.param == "stacked" else "0")
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
@pytest.mark.usefixtures("formulation")
def test_out_of_range_action_on_cuda_gives_that_agent_nan(head, bad_action):
    # Checking on the host would wait for the GPU on every call: the kernel refuses the agent.
    head = head.to("cuda")
    state, actions = make_inputs(3, 2, head, masked=0.0, device="cuda")
    actions[1, 1] = bad_action
    out = cmfq.causal_weights(head, state, actions, torch.ones_like(actions, dtype=torch.bool))
    clean = cmfq.causal_weights(head, state[[0, 2]], actions[[0, 2]])
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


def test_nan_state_propagates_to_its_row_only(path, head, device):
    head = head.to(device)
    state, actions = make_inputs(4, 3, head, masked=0.0, device=device)
    state[2, 0] = math.nan
    out = call(path, head, state, actions)
    clean = call(path, head, state[[0, 1, 3]], actions[[0, 1, 3]])
    assert torch.isnan(out.q_causal[2]).all() and torch.isnan(out.effects[2]).all()
    for name, a, b in zip(out._fields, out, clean):
        torch.testing.assert_close(a[[0, 1, 3]], b, msg=name)


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
