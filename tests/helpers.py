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
