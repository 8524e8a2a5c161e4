"""Small causal-weights workloads on CUDA for benchmarks/gpu_check.sh: each formulation (the
per-agent kernel, stacked rows, the fused trunk), dtype and kind of actions once, for
compute-sanitizer and Nsight Compute; with --profile, the time of every CUDA kernel of a few
calls and their number per call (torch.profiler); with --accuracy, each output's largest error
against float64 on the same inputs; with --time, the median time of a call, host included (the
small batches that training acts and learns on, where launches weigh most).

    python benchmarks/gpu_case.py --batch 64 --slots 8 --distributions --backward
    python benchmarks/gpu_case.py --batch 16384 --slots 32 --formulations stacked --profile --tf32
    python benchmarks/gpu_case.py --batch 64 --slots 32 --dtypes float32 --time
"""

from __future__ import annotations

import argparse
import copy

import torch
from causal_impls import FORMULATIONS
from workload import TEMPERATURE, make_workload

import cmfq

CALLS = 5  # profiled calls
TIMED_CALLS = 200  # timed calls (--time), after as many to warm up


def run_once(head, state, actions, formulation: str, backward: bool) -> bool:
    """One call (and its backward); whether every output is finite."""
    state = state.detach().requires_grad_(backward)
    out = cmfq.causal_weights(
        head, state, actions, temperature=TEMPERATURE, formulation=formulation
    )
    if backward:
        (out.q_causal.float().sum() + out.weights.float().square().sum()).backward()
    torch.cuda.synchronize()
    return all(bool(torch.isfinite(t).all()) for t in out)


def median_call_ms(head, state, actions, formulation: str, backward: bool) -> float:
    """The median time of one call (and its backward), from launch to its results on the GPU."""
    state = state.detach().requires_grad_(backward)
    times = []
    for timed in (False, True):
        for _ in range(TIMED_CALLS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            with torch.set_grad_enabled(backward):
                out = cmfq.causal_weights(
                    head, state, actions, temperature=TEMPERATURE, formulation=formulation
                )
                if backward:
                    (out.q_causal.float().sum() + out.weights.float().square().sum()).backward()
            end.record()
            end.synchronize()
            if timed:
                times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def report_accuracy(head, state, actions, formulation: str) -> None:
    """Each output's largest error, relative to its largest magnitude, against the generic path
    in float64 on the same (rounded) weights and inputs."""
    exact = copy.deepcopy(head).double()
    with torch.no_grad():
        out = cmfq.causal_weights(
            head, state, actions, temperature=TEMPERATURE, formulation=formulation
        )
        reference = cmfq.causal_weights(
            lambda s, x: exact(s, x),
            state.double(),
            actions.double() if actions.is_floating_point() else actions,
            temperature=TEMPERATURE,
            n_actions=head.n_actions,
        )
    errors = [
        f"{name} {float((a.double() - e).abs().max() / e.abs().max().clamp_min(1e-30)):.1e}"
        for name, a, e in zip(out._fields, out, reference)
    ]
    print("  largest error / largest value vs float64:", ", ".join(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="agents B (default: 64)")
    parser.add_argument("--slots", type=int, default=8, help="neighbour slots K (default: 8)")
    parser.add_argument(
        "--formulations",
        default="fused,stacked,trunk",
        help="comma-separated: fused (the per-agent kernel), stacked, trunk (the fused trunk)",
    )
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated dtypes")
    parser.add_argument(
        "--distributions", action="store_true", help="also neighbour action distributions"
    )
    parser.add_argument("--backward", action="store_true", help="also the backward")
    parser.add_argument(
        "--profile", action="store_true", help="print the CUDA kernels' times and count of 5 calls"
    )
    parser.add_argument(
        "--accuracy", action="store_true", help="print each output's error against float64"
    )
    parser.add_argument("--tf32", action="store_true", help="let float32 GEMMs use TF32")
    parser.add_argument(
        "--time", action="store_true", help=f"print the median time of {TIMED_CALLS} calls"
    )
    args = parser.parse_args()
    if not (torch.cuda.is_available() and cmfq.cuda_built()):
        raise SystemExit("needs a CUDA device and cmfq built with CUDA")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32

    for name in args.formulations.split(","):
        formulation = FORMULATIONS[name]
        for dtype_name in args.dtypes.split(","):
            work = make_workload(args.batch, args.slots, "cuda", getattr(torch, dtype_name))
            cases = {"indices": work.actions}
            if args.distributions:
                logits = torch.randn(*work.actions.shape, work.n_actions, device="cuda")
                cases["distributions"] = torch.softmax(logits, -1).to(work.state.dtype)
            for kind, actions in cases.items():
                finite = run_once(work.head, work.state, actions, formulation, args.backward)
                tf32 = " tf32" if args.tf32 and dtype_name == "float32" else ""
                print(f"{name} {dtype_name}{tf32} {kind} B={args.batch} K={args.slots}: "
                      f"outputs finite: {finite}", flush=True)
                if args.accuracy:
                    report_accuracy(work.head, work.state, actions, formulation)
                if args.time:
                    ms = median_call_ms(
                        work.head, work.state, actions, formulation, args.backward
                    )
                    print(f"  median call{' with backward' if args.backward else ''}: {ms:.3f} ms")
                if not args.profile:
                    continue
                activities = [torch.profiler.ProfilerActivity.CUDA]
                with torch.profiler.profile(activities=activities) as profile:
                    for _ in range(CALLS):
                        run_once(work.head, work.state, actions, formulation, args.backward)
                device = torch.autograd.DeviceType.CUDA
                launches = sum(e.device_type == device for e in profile.events()) / CALLS
                print(f"  GPU activities (kernels, copies, fills) per call: {launches:.0f}")
                print(profile.key_averages().table(sort_by="cuda_time_total", row_limit=25))


if __name__ == "__main__":
    main()
