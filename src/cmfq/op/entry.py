"""``cmfq.causal_weights``: input checks, then the fused op or the generic PyTorch path."""

from __future__ import annotations

import numbers
import operator
import warnings
from typing import NamedTuple

import torch

from cmfq import _C
from cmfq.op.generic import QFunction, causal_weights_reference
from cmfq.op.head import MeanFieldHead

_CUDA_BUILT = _C.cuda_built()
_HALF_AND_FULL = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FUSED_DTYPES = {"cpu": _HALF_AND_FULL, "cuda": _HALF_AND_FULL if _CUDA_BUILT else ()}
_CPU_ONLY_BUILD_WARNING = (
    "cmfq was built without CUDA, so CUDA tensors take the generic PyTorch path (same numbers, "
    "slower). For the fused kernel, reinstall cmfq with a CUDA build of torch and a matching nvcc "
    "on the PATH: pip install -v --no-build-isolation . (which says why when it cannot)."
)
_warned_cpu_only_build = False


class CausalWeights(NamedTuple):
    """What ``causal_weights`` returns, in the dtype and on the device of ``state``."""

    weights: torch.Tensor
    """[B, K] w_ik, 0 for masked neighbours; each row sums to 1 when the agent has a neighbour."""
    effects: torch.Tensor
    """[B, K] causal effects c_ik in nats (KL between policies), 0 for masked neighbours."""
    mean_action: torch.Tensor
    """[B, A] the plain mean action of the valid neighbours."""
    causal_mean_action: torch.Tensor
    """[B, A] the causal mean action sum_k w_ik e(a_k)."""
    q_causal: torch.Tensor
    """[B, A] Q(s_i, ., causal mean action): the values the agent acts on."""


def causal_weights(
    q: MeanFieldHead | QFunction,
    state: torch.Tensor,
    neighbor_actions: torch.Tensor,
    neighbor_mask: torch.Tensor | None = None,
    *,
    temperature: float = 0.1,
    weighting: str = "proportional",
    weight_temperature: float = 1.0,
    n_actions: int | None = None,
    formulation: str = "auto",
    check: bool = False,
) -> CausalWeights:
    """Causal weights of each agent's neighbours and the causal mean action (see docs/spec.md).

    Args:
        q: a ``cmfq.MeanFieldHead`` (fused C++/CUDA op) or any callable
            ``q(state[N, S], x[N, A]) -> [N, A]`` (batched PyTorch path); same numbers.
        state: float ``[B, S]`` state embeddings.
        neighbor_actions: int ``[B, K]`` action indices, or float ``[B, K, A]`` action vectors,
            used as given (the head is evaluated at each, the mean action is their average):
            distributions, i.e. non-negative rows that sum to 1, unless the head means otherwise;
            ``check=True`` checks that they are.
        neighbor_mask: bool ``[B, K]``; by default ``neighbor_actions >= 0`` (indices only).
        temperature: Boltzmann temperature tau > 0 of the policies compared.
        weighting: ``"proportional"`` (w = c / sum c) or ``"softmax"`` (softmax of c / tau_w).
        weight_temperature: tau_w > 0 of the softmax weighting.
        n_actions: number of actions A; needed only for a plain callable with index actions.
        formulation: how a ``MeanFieldHead`` is evaluated (same numbers, to rounding):
            ``"auto"`` (the device's fastest as measured: ``"per_agent"`` on the CPU; on CUDA
            ``"per_agent"`` up to 1024 agents, ``"fused_trunk"`` above), ``"per_agent"`` (the
            per-agent kernels), ``"stacked"`` (every agent's intervention rows stacked into
            GEMMs), ``"fused_trunk"`` (CUDA: stacked, with a float32 trunk of two layers after
            the first in one launch where the head fits it) or ``"generic"`` (the batched
            PyTorch path, calling the head). A plain callable takes ``"auto"`` or
            ``"generic"``. The environment variables ``CMFQ_STACKED=0/1`` and
            ``CMFQ_FUSED_TRUNK=0/1`` override what ``"auto"`` means (read once, at the first call);
            ``CMFQ_TRUNK_MMA=1`` puts the fused trunk's products on the tensor cores (opt-in:
            docs/spec.md); ``cmfq.which_formulation`` says which formulation a call takes.
        check: also check the values (this waits for the device): ``state`` and the action
            vectors finite, the action vectors non-negative and summing to 1 (to sqrt(eps) of
            their dtype) where the mask is true, and the outputs finite; raises ``ValueError``
            naming the first bad row.

    Differentiable with respect to ``state`` and the head's parameters; works under
    ``torch.compile``. Bad input raises ``ValueError`` or ``TypeError`` naming the argument, but
    nothing here waits for the device unless ``check=True``: a row whose state or action vectors
    hold a NaN or an infinity gets NaN weights, effects, causal mean action and ``q_causal`` (and
    NaN in ``mean_action`` where its action vectors do); for CUDA tensors the fused kernel does
    not check the action indices either: an agent with a valid neighbour whose action is outside
    [0, A) gets NaN in all its outputs.
    """
    n_actions = _resolve_n_actions(q, neighbor_actions, n_actions)
    scalars = _check_scalars(temperature, weighting, weight_temperature)
    neighbor_mask = _check_inputs(state, neighbor_actions, neighbor_mask, n_actions)
    fused = _fused_formulation(q, state, formulation)
    if check:
        _check_values(state, neighbor_actions, neighbor_mask)
    if fused is not None:
        layers = q.linear_layers()  # raises for modules the fused kernels do not evaluate
        _check_head(q, state, layers[2][0])
        out = torch.ops.cmfq.causal_weights(
            state, neighbor_actions, neighbor_mask, *layers, *scalars, fused
        )
    else:
        if not torch.compiler.is_compiling() and not neighbor_actions.is_floating_point():
            _check_action_range(neighbor_actions, neighbor_mask, n_actions)
        out = causal_weights_reference(
            q, state, neighbor_actions, neighbor_mask, n_actions, *scalars
        )
    out = CausalWeights(*out)
    if check:
        _check_outputs(out)
    return out


def which_formulation(
    q: MeanFieldHead | QFunction, state: torch.Tensor, formulation: str = "auto"
) -> str:
    """The formulation that ``causal_weights(q, state, ..., formulation=formulation)`` runs:
    ``"generic"`` (the batched PyTorch path), or the fused op's ``"per_agent"``, ``"stacked"`` or
    ``"fused_trunk"`` (which runs the stacked GEMMs for heads that do not fit it)."""
    fused = _fused_formulation(q, state, formulation)
    if fused is None:
        return "generic"
    return _C.resolve_formulation(fused, state.device.type == "cuda", state.shape[0])


def _fused_formulation(q: object, state: torch.Tensor, formulation: object) -> str | None:
    """The ``formulation`` the fused op is called with, or None for the generic path; checks the
    name (the fused ones by the op's own check)."""
    if not isinstance(formulation, str):
        raise TypeError(f"formulation must be a str, got {type(formulation).__name__}")
    if not isinstance(q, MeanFieldHead):
        if not callable(q):
            raise TypeError(
                f"q must be a cmfq.MeanFieldHead or a callable, got {type(q).__name__}"
            )
        if formulation not in ("auto", "generic"):
            raise ValueError(
                f"formulation={formulation!r} needs a cmfq.MeanFieldHead; a plain callable takes "
                "'auto' or 'generic' (its batched PyTorch path)"
            )
        return None
    if formulation == "generic":
        return None
    if not torch.compiler.is_compiling():  # the op checks it when it runs
        _C.resolve_formulation(formulation, state.device.type == "cuda", state.shape[0])
    if _fused_kernel_takes(state.device, state.dtype):
        return formulation
    if formulation != "auto":
        raise ValueError(
            f"formulation={formulation!r}: this build of cmfq has no kernels for "
            f"{state.device.type} tensors of {state.dtype} ('auto' takes the generic path)"
        )
    return None


def _check_values(state: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> None:
    """``check=True``'s checks of the inputs' values."""
    _raise_at_first("state", ~state.isfinite().all(-1), "holds a NaN or an infinity")
    if not actions.is_floating_point():
        return
    valid = mask.unsqueeze(-1)
    tolerance = torch.finfo(actions.dtype).eps ** 0.5
    total = actions.sum(-1)
    bad_vectors = (
        ("holds a NaN or an infinity", ~actions.isfinite() & valid),
        ("holds a negative entry", (actions < 0) & valid),
    )
    for what, bad in bad_vectors:
        _raise_at_first("neighbor_actions", bad.flatten(1).any(-1), what)
    unnormalised = (((total - 1).abs() > tolerance) & mask).any(-1)
    what = f"holds a vector whose sum is not 1 (to {tolerance:.0e})"
    _raise_at_first("neighbor_actions", unnormalised, what)


def _check_outputs(out: CausalWeights) -> None:
    for name, value in zip(CausalWeights._fields, out):
        _raise_at_first(
            name, ~value.isfinite().all(-1), "is not finite (are the head's parameters?)"
        )


def _raise_at_first(name: str, bad_rows: torch.Tensor, what: str) -> None:
    if bool(bad_rows.any()):
        row = int(bad_rows.nonzero()[0, 0])
        raise ValueError(f"{name} row {row} {what} (check=True)")


def _fused_kernel_takes(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this build's fused op takes tensors of ``device`` and ``dtype``; warns once when
    CUDA tensors meet a build without CUDA."""
    global _warned_cpu_only_build
    cpu_only_build = device.type == "cuda" and not _CUDA_BUILT
    if cpu_only_build and not _warned_cpu_only_build and not torch.compiler.is_compiling():
        warnings.warn(_CPU_ONLY_BUILD_WARNING, stacklevel=4)
        _warned_cpu_only_build = True
    return dtype in _FUSED_DTYPES.get(device.type, ())


def _resolve_n_actions(q: object, neighbor_actions: torch.Tensor, n_actions: int | None) -> int:
    if isinstance(q, MeanFieldHead):
        if n_actions is not None and n_actions != q.n_actions:
            raise ValueError(f"n_actions={n_actions} does not match the head's {q.n_actions}")
        return q.n_actions
    if isinstance(neighbor_actions, torch.Tensor) and neighbor_actions.dim() == 3:
        inferred = neighbor_actions.shape[-1]
        if n_actions is not None and n_actions != inferred:
            raise ValueError(
                f"n_actions={n_actions} does not match neighbor_actions' last dimension {inferred}"
            )
        return inferred
    if n_actions is None:
        raise ValueError("n_actions is required when q is a plain callable and actions are indices")
    if isinstance(n_actions, bool) or not isinstance(n_actions, numbers.Integral):
        raise TypeError(f"n_actions must be an int, got {type(n_actions).__name__}")
    if n_actions < 1:
        raise ValueError(f"n_actions must be >= 1, got {n_actions}")
    return operator.index(n_actions)


def _check_inputs(
    state: object,
    neighbor_actions: object,
    neighbor_mask: object,
    n_actions: int,
) -> torch.Tensor:
    """Validate the tensors but the action values; return the mask (the default one if None)."""
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"state must be a torch.Tensor, got {type(state).__name__}")
    if not state.is_floating_point():
        raise TypeError(f"state must be a floating-point tensor, got dtype {state.dtype}")
    if state.dim() != 2:
        raise ValueError(f"state must have shape [B, S], got {tuple(state.shape)}")
    if not isinstance(neighbor_actions, torch.Tensor):
        raise TypeError(
            f"neighbor_actions must be a torch.Tensor, got {type(neighbor_actions).__name__}"
        )
    if neighbor_actions.is_floating_point():
        if neighbor_actions.dim() != 3 or neighbor_actions.shape[-1] != n_actions:
            raise ValueError(
                "float neighbor_actions must have shape [B, K, A] with A = "
                f"{n_actions}, got {tuple(neighbor_actions.shape)}"
            )
    elif neighbor_actions.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        if neighbor_actions.dim() != 2:
            raise ValueError(
                "integer neighbor_actions must have shape [B, K], got "
                f"{tuple(neighbor_actions.shape)}"
            )
    else:
        raise TypeError(
            f"neighbor_actions must be integer indices or float distributions, "
            f"got dtype {neighbor_actions.dtype}"
        )
    if neighbor_actions.shape[0] != state.shape[0]:
        raise ValueError(
            f"neighbor_actions has batch size {neighbor_actions.shape[0]} but state has "
            f"{state.shape[0]}"
        )
    if neighbor_actions.device != state.device:
        raise ValueError(
            f"neighbor_actions is on {neighbor_actions.device} but state is on {state.device}"
        )
    if neighbor_mask is None:
        if neighbor_actions.is_floating_point():
            neighbor_mask = torch.ones(
                neighbor_actions.shape[:2], dtype=torch.bool, device=state.device
            )
        else:
            neighbor_mask = neighbor_actions >= 0
    elif not isinstance(neighbor_mask, torch.Tensor):
        raise TypeError(f"neighbor_mask must be a torch.Tensor, got {type(neighbor_mask).__name__}")
    elif neighbor_mask.dtype != torch.bool:
        raise TypeError(f"neighbor_mask must be a bool tensor, got dtype {neighbor_mask.dtype}")
    elif tuple(neighbor_mask.shape) != tuple(neighbor_actions.shape[:2]):
        raise ValueError(
            f"neighbor_mask must have shape {tuple(neighbor_actions.shape[:2])} "
            f"(that of neighbor_actions' [B, K]), got {tuple(neighbor_mask.shape)}"
        )
    elif neighbor_mask.device != state.device:
        raise ValueError(
            f"neighbor_mask is on {neighbor_mask.device} but state is on {state.device}"
        )
    return neighbor_mask


def _check_scalars(temperature: object, weighting: object, weight_temperature: object) -> tuple:
    """(temperature, weighting, weight_temperature) as the op takes them (Python floats, numpy
    ones included), after the kernels' own check of their values (``_C.check_scalars``)."""
    temperature = _as_float("temperature", temperature)
    weight_temperature = _as_float("weight_temperature", weight_temperature)
    if not isinstance(weighting, str):
        raise TypeError(f"weighting must be a str, got {type(weighting).__name__}")
    # Under torch.compile the fused op checks them when it runs; the call would break the graph.
    if not torch.compiler.is_compiling():
        _C.check_scalars(temperature, weighting, weight_temperature)
    return temperature, weighting, weight_temperature


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    return float(value)


def _check_head(head: MeanFieldHead, state: torch.Tensor, weight: torch.Tensor) -> None:
    """``weight``: the head's first trunk weight."""
    if state.shape[-1] != head.state_dim:
        raise ValueError(
            f"state has {state.shape[-1]} features but the head expects state_dim={head.state_dim}"
        )
    if weight.device != state.device:
        raise ValueError(
            f"the head's parameters are on {weight.device} but state is on {state.device}"
        )
    if weight.dtype != state.dtype:
        raise TypeError(f"state is {state.dtype} but the head's parameters are {weight.dtype}")


def _check_action_range(actions: torch.Tensor, mask: torch.Tensor, n_actions: int) -> None:
    bad = mask & ((actions < 0) | (actions >= n_actions))
    if bool(bad.any()):
        value = int(actions[bad][0])
        raise ValueError(
            f"neighbor_actions holds {value} where neighbor_mask is true; valid actions are "
            f"0..{n_actions - 1}"
        )


