"""The fused trunk on the tensor cores (CMFQ_TRUNK_MMA=1: trunk_kernel.cu's mma tiles, 3xTF32 for
float32 rows, the rows' own type for float16 and bfloat16 rows) against float64, within tolerances
from the error model below. The environment is read once, at the first call, so each dtype's cases
run in a fresh interpreter (check_cases).

The model. The tiles compute only each row's change of Q, dq = W3^T relu_change(W2^T h1), h1 the
first layer's change through its ReLU; everything else is the stacked formulation's code. So the
tensor-core path (T) is compared with the stacked formulation in IEEE float32 (X: cuBLAS without
TF32; for half inputs on the same weights and state widened to float32, which is what T computes
from), an agent's outputs within

    |T - float64| <= max |X - float64| + 2 D + u_o |X|,

the max over the agent's entries of that output, D the first-order bound below on how far T and X
can be apart, 2 D for second-order terms and for float64 stand-ins of float32 values, u_o |X| the
rounding of the outputs to a half type (u_o = 0 for float32).

D, row by row. A product a b of a tile carries its operands' rounding, a b (d_a + d_b) with
|d_a + d_b| <= u_p = 2 u + u^2, u = 2^-8 for bfloat16 (8 bits), 2^-11 for float16 (11). In 3xTF32
a is split into two TF32 parts (10 explicit bits, u_t = 2^-11) that keep it within u_t^2 |a| (the
rounding of the small part), and the product of the two small parts, within u_t^2 |a b|, is left
out: 2 u_t^2 of rounding and 2 u_t^2 of bias (float32's own rounding is 2^-24). Rounded to nearest,
the roundings are independent and of mean zero: to first order, each reaches a row's dq through
the rest of the trunk (relu_change's slope is in [0, 1]), and their sum stays within LAMBDA
standard deviations but with probability 1 - 2 exp(-LAMBDA^2 / 2) (Higham and Mary, SIAM J. Sci.
Comput. 41 (2019), Theorem 2.8):

    LAMBDA u_p sqrt(h1^2 (|W2| |W3|)^2 + h1^2 W2^2 W3^2 + h2^2 W3^2).

The rest is bounded outright: the bias, and the sums. The tensor cores' float32 additions may
truncate rather than round (Fasi, Higham, Mikaitis and Pranesh, PeerJ Comput. Sci. 7:e330, 2021),
errors of one sign: 2 u32 |a| |b| each, s n + 1 of them for n terms in s passes (3 for 3xTF32, 1
for a half type); X's own sums are within gamma_n |a| |b|, gamma_n = n u32 / (1 - n u32). With
e_n = bias + 2 (s n + 1) u32 + gamma_n, and relu_change 1-Lipschitz in the change, they add

    e_H1 |W3| |W2| |h1| + e_H2 |W3| |h2|.

To the outputs. A row's KL, KL(p || softmax(u0 + dq / tau)), has gradient pi - p in the logits
(pi the row's policy, p the reference's) and a Hessian at most the identity, so it moves by at most
|pi - p|_1 m + m^2 / 2 with m = max_a |d dq_a| / tau (pi and p from float64). To first order, a
proportional weight w_k = c_k / C moves by (|dc_k| + w_k sum_j |dc_j|) / (C - sum_j |dc_j|)
(unbounded where that denominator could reach the uniform fallback's threshold), the causal mean
action by sum_k |dw_k|, q_causal by |J| times that, J the head's Jacobian in its action input at
the causal mean action, and the mean action not at all.

Gradients. The backward is the stacked formulation's whichever forward ran, and takes from the
forward only its weights, effects and causal mean action (for half inputs, those of the forward run
again in float32, on the tensor cores in 3xTF32): those are bounded above. Here each gradient is
compared with the float64 backward at those very outputs, within the float32 backward's rounding,
6 sqrt(n) u32 in relative L2 with n = B (M + 2) the rows summed into a parameter's gradient
(independent rounding errors of mean zero: Higham and Mary, SIAM J. Sci. Comput. 41 (2019),
Theorem 2.8, as in test_causal_weights.py), plus the half type's rounding of the gradients.
"""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_head

import cmfq

TAU = 0.3
U32 = torch.finfo(torch.float32).eps / 2
# Per dtype: the operands' rounding of a product, relative to it, that is random (independent,
# of mean zero) and that is not; and the mma passes a sum takes.
OPERANDS = {
    "float32": (2 * 2.0**-22, 2 * 2.0**-22, 3),  # 3xTF32: the parts' rounding, the product left out
    "bfloat16": (2 * 2.0**-8 + 2.0**-16, 0.0, 1),
    "float16": (2 * 2.0**-11 + 2.0**-22, 0.0, 1),
}
HEADS = {  # trunk widths the fused trunk takes: the default head, and one off every step
    "default": {"state_dim": 40, "n_actions": 21, "action_hidden": (64, 32), "hidden": (128, 64)},
    "odd": {"state_dim": 24, "n_actions": 11, "action_hidden": (16,), "hidden": (100, 36)},
}
# (head, slots, batch, actions): K below, at and above A; batches that leave the last tile of 64
# rows part full; -1 padding in every index case (ragged neighbourhoods).
CASES = [
    ("default", 8, 1, "indices"),
    ("default", 8, 1000, "indices"),
    ("default", 32, 129, "indices"),
    ("default", 32, 3001, "indices"),
    ("default", 128, 77, "indices"),
    ("default", 128, 700, "indices"),
    ("default", 32, 300, "distributions"),
    ("odd", 8, 500, "indices"),
    ("odd", 32, 257, "distributions"),
]
MASKED = 0.3
LAMBDA = 6  # the operands' roundings summed: within LAMBDA standard deviations

needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and cmfq.cuda_built())
    or torch.cuda.get_device_capability() < (8, 0),
    reason="needs the CUDA kernel and a GPU of compute capability 8.0 or later",
)


def make_case(head_name, slots, batch, actions_as, dtype, device):
    """(head in dtype on device, the same rounded weights in float64 on the CPU, state, its
    float64 copy, actions on device, on the CPU, mask on the CPU)."""
    head64 = make_head(**HEADS[head_name])
    generator = torch.Generator().manual_seed(slots * 7919 + batch)
    n_actions = head64.n_actions
    state = torch.randn(batch, head64.state_dim, generator=generator, dtype=torch.float64)
    mask = torch.rand(batch, slots, generator=generator) >= MASKED
    if actions_as == "indices":
        actions = torch.randint(0, n_actions, (batch, slots), generator=generator)
        actions[~mask] = -1
    else:
        logits = 2 * torch.randn(batch, slots, n_actions, generator=generator)
        actions = torch.softmax(logits, -1).to(dtype)
    head = copy.deepcopy(head64).to(dtype=dtype, device=device)
    exact = copy.deepcopy(head).to(dtype=torch.float64, device="cpu")
    state = state.to(dtype=dtype, device=device)
    actions64 = actions.double() if actions.is_floating_point() else actions
    return head, exact, state, state.cpu().double(), actions.to(device), actions64, mask


def effect_bounds(exact, state64, actions64, mask, mean_action, operand_key):
    """[B, K] the bound on |T - X| of each neighbour's effect (0 where masked), from the bound on
    its row's change of Q."""
    first, _, second, _, last = exact.trunk
    n_actions = mean_action.shape[1]
    one_hot = not actions64.is_floating_point()
    # The rows: the A one-hot actions (an agent's rows are some of them), or its K distributions.
    if one_hot:
        rows = torch.eye(n_actions, dtype=torch.float64).expand(mask.shape[0], -1, -1)
    else:
        rows = actions64 * mask.unsqueeze(-1)

    def layers(x):
        s = state64.unsqueeze(1).expand(-1, x.shape[1], -1)
        z1 = first(torch.cat([s, exact.action_encoder(x)], -1))
        z2 = second(torch.relu(z1))
        return z1, z2, last(torch.relu(z2))

    with torch.no_grad():
        z1, z2, q = layers(rows)
        z1_mean, z2_mean, q_mean = layers(mean_action.unsqueeze(1))
    h1 = torch.relu(z1) - torch.relu(z1_mean)
    h2 = torch.relu(z2) - torch.relu(z2_mean)

    random, fixed, passes = OPERANDS[operand_key]
    w2, w3 = second.weight.detach(), last.weight.detach()
    # The random part, each rounding through the rest of the trunk (relu_change's slope is in
    # [0, 1]): the rows' and W2's in the second layer, h2's and W3's in the output layer.
    through = w2.abs().t() @ w3.abs().t()  # [H1, A]
    variance = (
        h1.square() @ through.square()
        + h1.square() @ (w2.square().t() @ w3.square().t())
        + h2.square() @ w3.square().t()
    )
    d_change = LAMBDA * random * variance.sqrt()

    def worst(n):
        return fixed + 2 * (passes * n + 1) * U32 + n * U32 / (1 - n * U32)

    second_sums = worst(w2.shape[1]) * (h1.abs() @ w2.abs().t())
    output_sums = worst(w3.shape[1]) * (h2.abs() @ w3.abs().t())
    d_change = d_change + second_sums @ w3.abs().t() + output_sums
    # The KL's gradient in the logits is softmax(row) - softmax(reference), its Hessian at most
    # the identity: |dKL| <= |pi - p|_1 m + m^2 / 2, m = max_a |d dq_a| / tau.
    m = d_change.amax(-1) / TAU
    spread = (torch.softmax(q / TAU, -1) - torch.softmax(q_mean / TAU, -1)).abs().sum(-1)
    per_row = spread * m + m * m / 2  # [B, R]
    if one_hot:
        per_row = per_row.gather(1, actions64.clamp_min(0))
    return per_row * mask


def output_bounds(exact, state64, mask, reference, d_effect):
    """D of the module docstring for each of the five outputs, from the float64 outputs and the
    effects' bounds."""
    moved = d_effect.sum(1, keepdim=True)
    spare = reference.effects.sum(1, keepdim=True) - moved
    d_weights = (d_effect + reference.weights * moved) / spare
    unbounded = spare <= 2 * cmfq._C.EFFECT_THRESHOLD
    d_weights = torch.where(mask, torch.where(unbounded, math.inf, d_weights), 0.0)
    d_causal = d_weights.sum(1, keepdim=True)  # [B, 1]: every entry of the causal mean action

    def q(s, x):
        return exact(s.unsqueeze(0), x.unsqueeze(0)).squeeze(0)

    jacobian = torch.func.vmap(torch.func.jacrev(q, argnums=1))(
        state64, reference.causal_mean_action
    )
    d_q = torch.where(d_causal.isinf(), math.inf, jacobian.abs().sum(-1) * d_causal)
    return (
        d_weights,
        d_effect,
        torch.zeros_like(reference.mean_action),
        d_causal.expand_as(reference.causal_mean_action),
        d_q,
    )


def assert_within(name, actual, baseline, expected, bound, u_out):
    """Each agent's entries within the module docstring's tolerance."""
    actual, baseline = actual.cpu().double(), baseline.cpu().double()
    baseline_error = (baseline - expected).abs().amax(1, keepdim=True)
    allowed = baseline_error + 2 * bound + u_out * baseline.abs()
    error = (actual - expected).abs()
    bad = ~(error <= allowed)
    assert not bad.any(), (
        f"{name}: {int(bad.sum())} entries out of the model's bounds, first at "
        f"{bad.nonzero()[0].tolist()}: error {float(error[bad][0]):.3e} > "
        f"{float(allowed[bad][0]):.3e}"
    )


def leaves_of(head):
    """The head's parameters in the order of the backward op's gradients."""
    return [p for group in head.linear_layers() for p in group]


def gradients(head, state, actions, mask, cotangent, formulation):
    """(outputs, gradients of the state and of leaves_of(head)) of the benchmark's loss."""
    state = state.detach().clone().requires_grad_()
    out = cmfq.causal_weights(
        head, state, actions, mask, temperature=TAU, formulation=formulation
    )
    loss = (out.q_causal * cotangent.to(out.q_causal)).sum() + out.weights.square().sum()
    return out, torch.autograd.grad(loss, [state, *leaves_of(head)])


@torch.no_grad()
def exact_backward(exact, state64, actions64, mask, cotangent, weights, saved):
    """The float64 backward of the loss at the forward outputs `saved` (weights, effects, causal
    mean action), the loss's cotangents computed from the forward's `weights`."""
    n = weights.shape[0]
    zeros = torch.zeros_like(saved[2], dtype=torch.float64)
    result = torch.ops.cmfq.causal_weights_backward(
        2 * weights.cpu().double(), torch.zeros(weights.shape, dtype=torch.float64), zeros,
        cotangent.double().repeat(n, 1), state64, actions64, mask.cpu(),
        *exact.linear_layers(), TAU, "proportional", 1.0,
        *(t.cpu().double() for t in saved), "stacked",
    )
    return [result[0], *(g for group in result[1:] for g in group)]


def check_case(case, dtype_name, device, formulation):
    """One case of CASES: the forward's outputs and the gradients against float64."""
    dtype = getattr(torch, dtype_name)
    head_name, slots, batch, actions_as = case
    head, exact, state, state64, actions, actions64, mask = make_case(*case, dtype, device)
    # X's inputs, and those of the float32 forward that the backward of half inputs runs again.
    wide = copy.deepcopy(head).float()
    wide_actions = actions.float() if actions_as == "distributions" else actions
    n_actions = exact.n_actions
    generator = torch.Generator().manual_seed(11)
    cotangent = torch.randn(n_actions, generator=generator).to(dtype)

    out, grads = gradients(head, state, actions, mask.to(device), cotangent, formulation)
    with torch.no_grad():
        baseline = cmfq.causal_weights(
            wide, state.float(), wide_actions, mask.to(device), temperature=TAU,
            formulation="stacked",
        )
        expected = cmfq.causal_weights(
            exact, state64, actions64, mask, temperature=TAU, formulation="generic"
        )
    d_effect = effect_bounds(exact, state64, actions64, mask, expected.mean_action, dtype_name)
    bounds = output_bounds(exact, state64, mask, expected, d_effect)
    u_out = 0.0 if dtype == torch.float32 else torch.finfo(dtype).eps / 2
    label = f"{dtype_name} {case}"
    for name, a, x, e, d in zip(out._fields, out, baseline, expected, bounds):
        assert_within(f"{label} {name}", a, x, e, d, u_out)

    # The backward's saved outputs: the forward's, or for half inputs those of the float32
    # forward that the backward runs again.
    saved = out
    if dtype != torch.float32:
        with torch.no_grad():
            saved = cmfq.causal_weights(
                wide, state.float(), wide_actions, mask.to(device), temperature=TAU,
                formulation=formulation,
            )
    expected_grads = exact_backward(exact, state64, actions64, mask, cotangent, out.weights,
                                    (saved.weights, saved.effects, saved.causal_mean_action))
    by_action = actions_as == "indices" and slots >= n_actions
    summed = batch * ((n_actions if by_action else slots) + 2)
    limit = 6 * math.sqrt(summed) * U32 + u_out
    for i, (a, e) in enumerate(zip(grads, expected_grads)):
        error = float((a.cpu().double() - e).norm() / e.norm())
        assert error <= limit, f"{label} gradient {i}: relative L2 error {error:.2e} > {limit:.2e}"


def check_cases(dtype_name, device="cuda", formulation="fused_trunk"):
    """Every case of CASES; run in an interpreter started with CMFQ_TRUNK_MMA=1."""
    assert not torch.backends.cuda.matmul.allow_tf32  # X is IEEE float32
    head, _, state, _, actions, _, _ = make_case(*CASES[2], getattr(torch, dtype_name), device)
    with torch.profiler.profile() as profile:
        cmfq.causal_weights(head, state, actions, temperature=TAU, formulation=formulation)
        torch.cuda.synchronize()
    names = {event.name for event in profile.events()}
    assert any("fused_trunk_mma" in name for name in names), sorted(names)
    for case in CASES:
        check_case(case, dtype_name, device, formulation)


def run_with_tensor_cores(code):
    """Runs `code` in a fresh interpreter with CMFQ_TRUNK_MMA=1 and this folder on its path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMFQ_")}
    env["CMFQ_TRUNK_MMA"] = "1"
    here = str(Path(__file__).parent)
    script = f"import sys\nsys.path.insert(0, {here!r})\n{code}\n"
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cuda_tensor_core_trunk_matches_float64(dtype):
    done = run_with_tensor_cores(f"import test_trunk_mma\ntest_trunk_mma.check_cases({dtype!r})")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_cuda
def test_cuda_tensor_cores_are_opt_in():
    """Without CMFQ_TRUNK_MMA the fused trunk multiplies on the CUDA cores, and half inputs take
    the stacked steps."""
    if os.environ.get("CMFQ_TRUNK_MMA") == "1":
        pytest.skip("this run asks for the tensor cores")
    for dtype in (torch.float32, torch.bfloat16):
        head, _, state, _, actions, _, _ = make_case(*CASES[2], dtype, "cuda")
        with torch.profiler.profile() as profile:
            cmfq.causal_weights(head, state, actions, temperature=TAU, formulation="fused_trunk")
            torch.cuda.synchronize()
        trunk = [event.name for event in profile.events() if "fused_trunk" in event.name]
        assert trunk if dtype == torch.float32 else not trunk, trunk
        assert not any("fused_trunk_mma" in name for name in trunk), trunk
