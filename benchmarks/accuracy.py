"""What every benchmarked implementation is checked against before it is timed: the generic path in
float64 on the same inputs (the tested dtype's rounded weights, state and cotangent), within
tolerances from a rounding-error model (benchmarks/results/notes.md, "Accuracy check").

The model: an implementation that computes in a dtype of unit roundoff u_c and returns a dtype of
unit roundoff u_o is within

    4 u_o + 8 u_c sqrt(n)

of float64 (relative to the largest magnitude of an output, or relative L2 error of a gradient),
where n is the number of products summed into one value: the head's widest dot product for the
outputs, an agent's rows times the first trunk layer's width for the gradient of the state, and
every row of every agent for a parameter's gradient. Where that bound exceeds 1/2 no digit is left
to check, and the bound is 1/2 (a missing term or a wrong sign still fails).

A ReLU network's gradient jumps where a pre-activation crosses 0: an agent with one within rounding
of 0 may see its ReLU on either side and its gradient change by that unit's share, however exact
the arithmetic. So the gradient check leaves out (a zero cotangent) the agents with a float64
pre-activation within KINK_MARGIN of 0, relative to its scale |W| |x| + |b|.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from causal_impls import IMPLEMENTATIONS
from torch import nn
from workload import Workload

HALF = (torch.float16, torch.bfloat16)
# The implementations that compute half-precision inputs in float32: the fused op (docs/spec.md;
# the stacked formulation keeps its rows in the half type, a rounding per layer that 4 u_o covers).
WIDENING = ("fused", "stacked")
SANITY = 0.5
# Under CMFQ_TRUNK_MMA=1 the fused trunk ("trunk") multiplies on the tensor cores, float32 in
# 3xTF32: operands kept to about 22 bits, additions that may truncate (tests/test_trunk_mma.py).
TENSOR_CORE_TRUNK = os.environ.get("CMFQ_TRUNK_MMA") == "1"
TF32X3_ROUNDOFF = 2.0**-20
# A float32 pre-activation of these heads is within a few units of rounding of its scale of the
# float64 one; agents with one nearer 0 than this are left out of the gradient check. The share of
# agents left out grows with this margin: about 5% at K = 32.
KINK_MARGIN = 32 * torch.finfo(torch.float32).eps / 2
CHUNK = 8192  # agents per float64 evaluation, which bounds its memory


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def tolerance(impl: str, dtype: torch.dtype, terms: int) -> float:
    """The model's bound for `impl` on inputs of `dtype`, for sums of `terms` products."""
    compute = torch.float32 if impl in WIDENING and dtype in HALF else dtype
    u_c = unit_roundoff(compute)
    if impl == "trunk" and dtype == torch.float32 and TENSOR_CORE_TRUNK:
        u_c = TF32X3_ROUNDOFF
    bound = 4 * unit_roundoff(dtype) + 8 * u_c * math.sqrt(terms)
    return min(bound, SANITY)


def summed_terms(workload: Workload) -> dict[str, int]:
    """n of the model for the outputs, the gradient of the state and a parameter's gradient."""
    head = workload.head
    batch, slots = workload.actions.shape
    rows = slots + 2  # an agent's rows: its mean action, its neighbours' actions, the causal one
    widest = max(m.in_features for m in head.modules() if isinstance(m, nn.Linear))
    return {"outputs": widest, "state": rows * head.hidden[0], "parameter": batch * rows}


@dataclass
class Anchor:
    outputs: tuple[torch.Tensor, ...]
    grads: tuple[torch.Tensor, ...]
    """Empty for the forward mode."""


@contextmanager
def _kink_margins(head: nn.Module, actions: torch.Tensor) -> Iterator[torch.Tensor]:
    """While open, records into the [B] tensor it yields each agent's smallest |pre-activation| /
    (|W| |x| + |b|) over the ReLUs of its rows in the generic path's call of `head` (masked
    neighbours' rows, which take no gradient, left out)."""
    batch = actions.shape[0]
    valid = torch.cat([actions.new_ones(batch, 1, dtype=torch.bool), actions >= 0], 1)
    margins = torch.full((batch,), math.inf, dtype=torch.float64, device=actions.device)

    @torch.no_grad()
    def record(module, inputs, output):
        scale = inputs[0].abs() @ module.weight.abs().t() + module.bias.abs()
        rows = (output.abs() / scale).nan_to_num(math.inf).amin(1).view(batch, -1)
        if rows.shape[1] > 1:  # the call on every intervention row, not the causal one
            rows = rows.masked_fill(~valid, math.inf)
        torch.minimum(margins, rows.amin(1), out=margins)

    linears = [m for m in head.action_encoder if isinstance(m, nn.Linear)]
    linears += [m for m in head.trunk if isinstance(m, nn.Linear)][:-1]  # each before a ReLU
    hooks = [m.register_forward_hook(record) for m in linears]
    try:
        yield margins
    finally:
        for hook in hooks:
            hook.remove()


def float64_anchor(
    workload: Workload, cotangent: torch.Tensor | None
) -> tuple[Anchor, torch.Tensor | None]:
    """The generic path in float64, a chunk of agents at a time; with a cotangent, also the
    gradients of (q_causal * cotangent).sum() and the cotangent with the agents near a kink set
    to 0, which every implementation is then given."""
    head = copy.deepcopy(workload.head).double()
    generic = IMPLEMENTATIONS["generic"](head)
    outputs, state_grads, parameter_grads, kept = [], [], None, []
    for start in range(0, workload.state.shape[0], CHUNK):
        part = slice(start, start + CHUNK)
        state, actions = workload.state[part].double(), workload.actions[part]
        if cotangent is None:
            with torch.no_grad():
                outputs.append(generic(state, actions))
            continue
        state = state.requires_grad_()
        with _kink_margins(head, actions) as margins:
            out = generic(state, actions)
        keep = margins >= KINK_MARGIN
        kept.append(keep)
        loss = (out[-1] * cotangent[part].double() * keep.unsqueeze(1)).sum()
        grads = torch.autograd.grad(loss, [state, *head.parameters()])
        outputs.append(tuple(o.detach() for o in out))
        state_grads.append(grads[0])
        parameter_grads = (
            grads[1:]
            if parameter_grads is None
            else [a + b for a, b in zip(parameter_grads, grads[1:], strict=True)]
        )
    joined = tuple(torch.cat(parts) for parts in zip(*outputs, strict=True))
    if cotangent is None:
        return Anchor(joined, ()), None
    keep = torch.cat(kept).unsqueeze(1).to(cotangent.dtype)
    return Anchor(joined, (torch.cat(state_grads), *parameter_grads)), cotangent * keep
