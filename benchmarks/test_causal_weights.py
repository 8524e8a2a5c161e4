"""Causal weights: fused op (and, on GPUs, its stacked formulation) against the generic, compiled,
factored and naive implementations.

Each case first runs the implementation, checks its outputs (and, for forward+backward, its
gradients with respect to the state and every head parameter) against the generic path in float64
on the same inputs (benchmarks/accuracy.py), and only then times it. The number of rounds adapts to
the cost of one call, so the whole CPU run takes a few minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch
from accuracy import Anchor, float64_anchor, summed_terms, tolerance
from causal_impls import IMPLEMENTATIONS, CausalFn
from shapes import BATCHES, DTYPES, IMPLS, MODES, SLOTS
from workload import Workload, make_workload

OUTPUTS = ("weights", "effects", "mean_action", "causal_mean_action", "q_causal")
MIN_ROUNDS, MAX_ROUNDS = 3, 200


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    device = metafunc.config.getoption("--device")
    cases, ids = [], []
    for dtype_name in DTYPES[device]:
        dtype = getattr(torch, dtype_name)
        for mode in MODES:
            for batch in BATCHES[device]:
                for slots in SLOTS[device]:
                    for impl in IMPLS[device]:
                        cases.append((dtype, mode, batch, slots, impl))
                        ids.append(f"{device}-{dtype_name}-{mode}-B{batch}-K{slots}-{impl}")
    metafunc.parametrize(("dtype", "mode", "batch", "slots", "impl"), cases, ids=ids)


class _ShapeCache:
    """The workload, its float64 anchor and the cotangent of the current shape only (memory stays
    small)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.workload: Workload | None = None
        self.anchor: Anchor | None = None
        self.cotangent: torch.Tensor | None = None

    def get(self, key: tuple, make: Callable[[], Workload]) -> Workload:
        if key != self.key:
            self.key, self.workload, self.anchor, self.cotangent = key, None, None, None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.workload = make()
        return self.workload


_cache = _ShapeCache()


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _forward_step(fn: CausalFn, workload: Workload, device: str) -> Callable[[], tuple]:
    def step() -> tuple:
        with torch.no_grad():
            outputs = fn(workload.state, workload.actions)
        _synchronize(device)
        return outputs, ()

    return step


def _cotangent(workload: Workload) -> torch.Tensor:
    """The fixed linear function of q_causal whose gradient is taken (what a TD loss sends back)."""
    generator = torch.Generator().manual_seed(7)
    cotangent = torch.randn(workload.state.shape[0], workload.n_actions, generator=generator)
    return cotangent.to(device=workload.state.device, dtype=workload.state.dtype)


def _training_step(
    fn: CausalFn, workload: Workload, device: str, cotangent: torch.Tensor
) -> Callable[[], tuple]:
    """Forward, then the gradient of (q_causal * cotangent).sum() with respect to the state and
    every parameter of the head."""
    state = workload.state.detach().requires_grad_()
    leaves = [state, *workload.head.parameters()]

    def step() -> tuple:
        outputs = fn(state, workload.actions)
        grads = torch.autograd.grad((outputs[-1] * cotangent).sum(), leaves)
        _synchronize(device)
        return tuple(o.detach() for o in outputs), grads

    return step


def _check_close(name: str, actual: torch.Tensor, expected: torch.Tensor, limit: float) -> None:
    """Elementwise, within `limit` of the value or of the output's largest magnitude."""
    scale = max(float(expected.abs().max()), 1e-12) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.double(), expected, rtol=limit, atol=limit * scale, msg=lambda m: f"{name}: {m}"
    )


def _check_gradient(name: str, actual: torch.Tensor, expected: torch.Tensor, limit: float) -> None:
    error = float((actual.double() - expected).norm())
    size = max(float(expected.norm()), 1e-300)
    assert error <= limit * size, f"{name}: relative L2 error {error / size:.2e} > {limit:.1e}"


def _check_same(
    result: tuple, anchor: Anchor, impl: str, dtype: torch.dtype, workload: Workload
) -> None:
    """Against float64, within benchmarks/accuracy.py's tolerances."""
    outputs, grads = result
    terms = summed_terms(workload)
    for name, actual, reference in zip(OUTPUTS, outputs, anchor.outputs, strict=True):
        _check_close(name, actual, reference, tolerance(impl, dtype, terms["outputs"]))
    for i, (actual, reference) in enumerate(zip(grads, anchor.grads, strict=True)):
        kind = "state" if i == 0 else "parameter"
        name = "grad of state" if i == 0 else f"grad of parameter {i - 1}"
        _check_gradient(name, actual, reference, tolerance(impl, dtype, terms[kind]))


def _run_timed(step: Callable[[], tuple]) -> tuple[tuple, float]:
    start = time.perf_counter()
    result = step()
    return result, time.perf_counter() - start


def test_causal_weights(
    benchmark,
    device: str,
    bench_seconds: float,
    dtype,
    mode: str,
    batch: int,
    slots: int,
    impl: str,
) -> None:
    workload = _cache.get(
        (dtype, mode, batch, slots), lambda: make_workload(batch, slots, device, dtype)
    )
    # Every implementation, generic included, is checked against the generic path (the
    # reference of docs/spec.md) in float64, so a failing one loses only its own row.
    try:
        if _cache.anchor is None:
            cotangent = None if mode == "forward" else _cotangent(workload)
            _cache.anchor, _cache.cotangent = float64_anchor(workload, cotangent)
        fn = IMPLEMENTATIONS[impl](workload.head)
        if mode == "forward":
            step = _forward_step(fn, workload, device)
        else:
            step = _training_step(fn, workload, device, _cache.cotangent)
        result, _ = _run_timed(step)  # also compiles, for the compiled implementation
        _check_same(result, _cache.anchor, impl, dtype, workload)
        del result
        _, seconds = _run_timed(step)
    except torch.OutOfMemoryError:
        pytest.skip(f"{impl} runs out of {device} memory at B={batch}, K={slots}, {mode}")

    benchmark.group = f"{device} {str(dtype).removeprefix('torch.')} {mode} B={batch} K={slots}"
    benchmark.extra_info.update(
        kind="causal_weights",
        impl=impl,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        mode=mode,
        batch=batch,
        slots=slots,
        n_actions=workload.n_actions,
        state_dim=workload.head.state_dim,
        action_hidden=list(workload.head.action_hidden),
        hidden=list(workload.head.hidden),
        distinct_actions=workload.distinct_actions(),
        threads=torch.get_num_threads(),
    )
    rounds = int(min(MAX_ROUNDS, max(MIN_ROUNDS, bench_seconds / max(seconds, 1e-9))))
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=0)
