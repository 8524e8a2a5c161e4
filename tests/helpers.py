"""Shared builders and checks of the tests."""

import csv
from pathlib import Path

import torch

import cmfq


def make_head(
    state_dim=12,
    n_actions=5,
    action_hidden=(8, 6),
    hidden=(16, 8),
    *,
    action_scale=6.0,
    dtype=torch.float64,
    device="cpu",
    seed=0,
):
    """A random head whose action branch is scaled up so that the effects are well above noise."""
    torch.manual_seed(seed)
    head = cmfq.MeanFieldHead(state_dim, n_actions, action_hidden, hidden)
    with torch.no_grad():
        for layer in head.action_encoder:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(action_scale)
        head.trunk[0].weight[:, state_dim:].mul_(action_scale)
    return head.to(dtype=dtype, device=device)


def forward_error_bound(head, state, x):
    """A bound on |fl(Q) - Q| for each of the head's action values at (state [N, S], x [N, A]),
    computed in the head's dtype in any summation order, from the standard model of floating-point
    arithmetic: a Linear layer y = W v + b is off by at most gamma_(n+1) (|W| |v| + |b|) with
    gamma_n = n u / (1 - n u), n its input width (Higham, Accuracy and Stability of Numerical
    Algorithms, 2nd ed., section 3.5), plus |W| times the error its input already carries; a ReLU
    does not enlarge an error. The fused kernels also split the first trunk layer in two (its
    state and action halves), which this bound covers: a sum in any order. Evaluated in float64."""
    u = torch.finfo(head.trunk[0].weight.dtype).eps / 2

    def through(layers, value, error):
        for layer in layers:
            if isinstance(layer, torch.nn.Linear):
                w, b = layer.weight.detach().double(), layer.bias.detach().double()
                n = w.shape[1] + 1
                gamma = n * u / (1 - n * u)
                error = error @ w.abs().t() + gamma * (value.abs() @ w.abs().t() + b.abs())
                value = value @ w.t() + b
            else:
                value = layer(value)
        return value, error

    state, x = state.double(), x.double()
    encoded, encoded_error = through(head.action_encoder, x, torch.zeros_like(x))
    value = torch.cat([state, encoded], -1)
    error = torch.cat([torch.zeros_like(state), encoded_error], -1)
    return through(head.trunk, value, error)[1]


def make_inputs(batch, slots, head, *, masked=0.3, seed=1, dtype=None, device="cpu"):
    """Random states and neighbour actions, a fraction `masked` of the slots marked -1."""
    generator = torch.Generator().manual_seed(seed)
    dtype = dtype or head.trunk[0].weight.dtype
    state = torch.randn(batch, head.state_dim, generator=generator, dtype=dtype)
    actions = torch.randint(0, head.n_actions, (batch, slots), generator=generator)
    actions[torch.rand(batch, slots, generator=generator) < masked] = -1
    return state.to(device), actions.to(device)


def generic(head):
    """The head as a plain callable, so that causal_weights takes the generic PyTorch path."""
    return lambda state, x: head(state, x)


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same metrics (but the timing) and the same final weights."""
    from cmfq.training.checkpoint import load_checkpoint

    rows = []
    for run in (a, b):
        with open(run / "metrics.csv", newline="") as f:
            rows.append([{k: v for k, v in row.items() if k != "steps_per_s"}
                         for row in csv.DictReader(f)])
    assert rows[0] == rows[1]
    wa, wb = load_checkpoint(a / "last.pt").model, load_checkpoint(b / "last.pt").model
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def splitmix64_reference(seed: int, n: int) -> int:
    """Output ``n`` (0, 1, ...) of SplitMix64 seeded with ``seed``, in Python ints modulo 2^64
    (Vigna's C code: the state advanced n + 1 times by the golden gamma, then mixed), as the int64
    of its bits."""
    mask = (1 << 64) - 1
    z = (seed + (n + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return z - (1 << 64) if z >> 63 else z
