"""Causal weights: fused op (and, on GPUs, its stacked formulation) against the generic, compiled,
factored and naive implementations.

Each case first runs the implementation, checks its outputs (and, for forward+backward, its
gradients with respect to the state and every head parameter) against the generic path's on the
same inputs, and only then times it. The number of rounds adapts to the cost of one call, so the
whole CPU run takes a few minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch
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
    """The workload and the reference results of the current shape only (memory stays small)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.workload: Workload | None = None
        self.expected: dict[str, tuple] = {}

    def get(self, key: tuple, make: Callable[[], Workload]) -> Workload:
        if key != self.key:
            self.key, self.workload, self.expected = key, None, {}
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


def _training_step(fn: CausalFn, workload: Workload, device: str) -> Callable[[], tuple]:
    """Forward, then the gradient of a fixed linear function of q_causal (what a TD loss sends
    back) with respect to the state and every parameter of the head."""
    state = workload.state.detach().requires_grad_()
    leaves = [state, *workload.head.parameters()]
    generator = torch.Generator().manual_seed(7)
    cotangent = torch.randn(workload.state.shape[0], workload.n_actions, generator=generator)
    cotangent = cotangent.to(device=workload.state.device, dtype=workload.state.dtype)

    def step() -> tuple:
        outputs = fn(state, workload.actions)
        grads = torch.autograd.grad((outputs[-1] * cotangent).sum(), leaves)
        _synchronize(device)
        return tuple(o.detach() for o in outputs), grads

    return step


def _check_close(name: str, actual: torch.Tensor, expected: torch.Tensor, loose: bool) -> None:
    actual, expected = actual.double(), expected.double()
    scale = max(float(expected.abs().max()), 1e-12) if expected.numel() else 1.0
    rtol, atol = (0.1, 0.1 * scale) if loose else (2e-4, 2e-5 * scale)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def _check_gradient(name: str, actual: torch.Tensor, expected: torch.Tensor, loose: bool) -> None:
    """Relative L2 error: summing the first layer in another order can flip a ReLU whose input
    is within rounding of 0, which changes a few entries of a gradient by that unit's share;
    those flips are not errors, and they move the whole gradient by far less than a real one."""
    error = float((actual.double() - expected.double()).norm())
    size = float(expected.double().norm())
    limit = 0.1 if loose else 1e-3
    assert error <= limit * max(size, 1e-12), f"{name}: relative L2 error {error / size:.2e}"


def _check_same(result: tuple, expected: tuple, loose: bool) -> None:
    outputs, grads = result
    expected_outputs, expected_grads = expected
    for name, actual, reference in zip(OUTPUTS, outputs, expected_outputs, strict=True):
        if loose and name == "effects":
            continue  # bfloat16 KL of nearly equal policies is rounding noise; the weights tell
        _check_close(name, actual, reference, loose)
    for i, (actual, reference) in enumerate(zip(grads, expected_grads, strict=True)):
        name = "grad of state" if i == 0 else f"grad of parameter {i - 1}"
        _check_gradient(name, actual, reference, loose)


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
    make_step = _forward_step if mode == "forward" else _training_step
    workload = _cache.get(
        (dtype, mode, batch, slots), lambda: make_workload(batch, slots, device, dtype)
    )
    # bfloat16 results are checked against float32 ones: a sanity check, not equality.
    loose = dtype != torch.float32
    # The generic path is the reference (docs/spec.md, and the tests'): every implementation is
    # checked against it, so a failing one loses only its own row; generic itself against naive.
    anchor = "naive" if impl == "generic" else "generic"
    try:
        if anchor not in _cache.expected:
            anchor_workload = workload
            if loose:
                anchor_workload = make_workload(batch, slots, device, torch.float32)
            anchor_fn = IMPLEMENTATIONS[anchor](anchor_workload.head)
            _cache.expected[anchor] = make_step(anchor_fn, anchor_workload, device)()
        step = make_step(IMPLEMENTATIONS[impl](workload.head), workload, device)
        result, _ = _run_timed(step)  # also compiles, for the compiled implementation
        _check_same(result, _cache.expected[anchor], loose)
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
