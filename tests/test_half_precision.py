"""float16 and bfloat16 on every path. The fused op computes in float32 (the stacked formulation
keeps its intervention rows in the half type, for the tensor cores) and rounds its outputs to the
half type; its outputs and gradients meet the tolerances below against float64 on the same rounded
weights and inputs. The generic path computes in the half type itself, so it is only checked to
run and to give weights that are a distribution."""

import copy

import pytest
import torch
from helpers import generic, make_head, make_inputs

import cmfq

HALF = [torch.bfloat16, torch.float16]
# Relative to the largest magnitude of each output: a few units of the half type's rounding
# (2^-8 for bfloat16, 2^-11 for float16), which the rows of the stacked formulation add to.
OUTPUT_TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 1.5e-3}
# Relative L2 error of each gradient (state and every head parameter): the backward computes in
# float32 (from the forward run again in float32) and rounds the gradients to the half type.
GRADIENT_TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 1.5e-3}
TAU = 0.3


def heads_and_inputs(dtype, device):
    """(half head on device, the same rounded weights in float64 on the CPU, half state, float64
    copy of it, actions on device, actions on the CPU)."""
    exact = make_head(state_dim=288, n_actions=21, action_hidden=(64, 32), hidden=(128, 64))
    state, actions = make_inputs(48, 32, exact)
    half = copy.deepcopy(exact).to(dtype=dtype, device=device)
    exact = copy.deepcopy(half).to(dtype=torch.float64, device="cpu")
    state_half = state.to(dtype=dtype, device=device)
    return half, exact, state_half, state_half.cpu().double(), actions.to(device), actions


def close(actual, expected, tolerance, name):
    scale = float(expected.detach().abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.cpu().double(), expected, rtol=tolerance, atol=tolerance * scale, msg=name
    )


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_fused_half_outputs_match_float64(device, dtype, formulation):
    half, exact, state, state64, actions, actions64 = heads_and_inputs(dtype, device)
    out = cmfq.causal_weights(half, state, actions, temperature=TAU, formulation=formulation)
    reference = cmfq.causal_weights(
        generic(exact), state64, actions64, n_actions=21, temperature=TAU
    )
    assert all(t.dtype == dtype for t in out)
    for name, a, e in zip(out._fields, out, reference):
        close(a, e, OUTPUT_TOLERANCE[dtype], name)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("create_graph", [False, True], ids=["backward-op", "pytorch-chain-rule"])
def test_fused_half_gradients_match_float64(device, dtype, create_graph, formulation):
    half, exact, state, state64, actions, actions64 = heads_and_inputs(dtype, device)
    cotangent = torch.randn(state.shape[0], 21, generator=torch.Generator().manual_seed(3))

    def gradients(head, s, a, path):
        s = s.clone().requires_grad_()
        out = cmfq.causal_weights(head, s, a, temperature=TAU, formulation=path)
        loss = (out.q_causal * cotangent.to(s)).sum() + out.weights.square().sum()
        return torch.autograd.grad(loss, [s, *head.parameters()], create_graph=create_graph)

    actual = gradients(half, state, actions, formulation)
    expected = gradients(exact, state64, actions64, "generic")
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == dtype
        error = float((a.cpu().double() - e).norm() / e.norm())
        assert error <= GRADIENT_TOLERANCE[dtype], f"gradient {i}: relative L2 error {error:.2e}"


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_generic_path_takes_half(device, dtype):
    half, _, state, _, actions, _ = heads_and_inputs(dtype, device)
    out = cmfq.causal_weights(generic(half), state, actions, n_actions=21, temperature=TAU)
    assert all(t.dtype == dtype for t in out)
    assert all(torch.isfinite(t).all() for t in out)
    valid = (actions >= 0).any(1)
    sums = out.weights.float().sum(1)[valid]
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=2e-2)
