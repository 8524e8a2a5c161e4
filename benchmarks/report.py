"""Tables, targets, roofline and the time-vs-batch plot of one or more benchmark runs.

    python benchmarks/report.py benchmarks/results/RUN.json [MORE.json ...] \
        --out docs/performance.md [--notes benchmarks/results/notes.md]

Reads pytest-benchmark JSON written by ``pytest benchmarks/ --benchmark-only --benchmark-json``.
Where several runs measure the same case, the later file on the command line wins. Nothing here
is measured: every figure is a ratio or a rate of the medians in the files. A ratio pairs two
timings of one file only (one run, one machine); where the two come from different files it is
left out ("–"), since a time from one machine over a time from another means nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from shapes import (
    ACTION_HIDDEN,
    BATCHES,
    DTYPES,
    HIDDEN,
    IMPLS,
    MODES,
    N_ACTIONS,
    SLOTS,
    STATE_DIM,
    expected_distinct_actions,
)

ALGOS = ("il", "mfq", "cmfq")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
INDEX_BYTES, MASK_BYTES = 8, 1

# NVIDIA datasheet peaks of the SXM parts (dense): the H100 and the H200 share their arithmetic
# rates; the H200's HBM3e is faster.
GPU_PEAK_FLOPS = {"float32": 67e12, "bfloat16": 990e12}
GPU_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}
# FP32 FLOP per cycle and core: two 256-bit FMA pipes (AVX2) or two 512-bit ones (AVX-512).
CPU_FLOP_PER_CYCLE = {"avx512f": 64, "avx2": 32}

# (device, dtype, mode, batch, slots, impl) -> median seconds
Key = tuple[str, str, str, int, int, str]
NOT_MEASURED = "not yet measured"
NOT_ONE_RUN = "not comparable: measured in different runs"


@dataclass
class Run:
    path: Path
    date: str
    machine: dict
    kernel: dict[Key, dict]
    training: dict[str, dict]


def load(path: Path) -> Run:
    data = json.loads(path.read_text())
    kernel, training = {}, {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info.get("kind") == "causal_weights":
            key = (
                info["device"],
                info["dtype"],
                info["mode"],
                info["batch"],
                info["slots"],
                info["impl"],
            )
            kernel[key] = {
                **info,
                "median": bench["stats"]["median"],
                "rounds": bench["stats"]["rounds"],
                "file": str(path),
            }
        elif info.get("kind") == "training":
            training[info["algo"]] = {**info, "median": bench["stats"]["median"],
                                      "file": str(path)}
    return Run(path, data.get("datetime", "?"), data.get("machine_info", {}), kernel, training)


# ---------------------------------------------------------------------------- cost model
def _chain_macs(widths: list[int]) -> int:
    return sum(a * b for a, b in zip(widths, widths[1:], strict=False))


def head_macs(
    state_dim: int = STATE_DIM,
    n_actions: int = N_ACTIONS,
    action_hidden: tuple[int, ...] = ACTION_HIDDEN,
    hidden: tuple[int, ...] = HIDDEN,
) -> dict[str, int]:
    """Multiply-adds per row of the head's pieces: the state half of the first trunk layer, an
    action vector through the encoder to the first layer's action half, and the trunk after the
    first layer's pre-activation."""
    encoder = [n_actions, *action_hidden]
    return {
        "state": state_dim * hidden[0],
        "action": _chain_macs(encoder) + encoder[-1] * hidden[0],
        "tail": _chain_macs([*hidden, n_actions]),
        "params": sum(a * b + b for a, b in zip(encoder, encoder[1:], strict=False))
        + sum(
            a * b + b
            for a, b in zip([state_dim + encoder[-1], *hidden], [*hidden, n_actions], strict=False)
        ),
    }


def minimal_flops(batch: int, distinct: float, macs: dict[str, int] | None = None) -> float:
    """The least work of the forward: per agent the state half once, the mean and the causal
    mean action through encoder and trunk, and one trunk evaluation per distinct valid
    neighbour action (an intervention's first layer is the state half plus a row of the A-row
    action table, computed once). Softmax and KL (~10 A flops per row) are left out: < 1%."""
    m = macs or head_macs()
    per_agent = m["state"] + 2 * (m["action"] + m["tail"]) + distinct * m["tail"]
    return 2.0 * (batch * per_agent + N_ACTIONS * m["action"])


def executed_flops(impl: str, batch: int, slots: int, distinct: float) -> float:
    """What each implementation actually multiplies: the generic, compiled and naive paths
    evaluate the whole head on K + 2 rows per agent; factored evaluates all A actions, stacked
    min(K, A) rows."""
    m = head_macs()
    if impl in ("generic", "compiled", "naive"):
        return 2.0 * batch * (slots + 2) * (m["state"] + m["action"] + m["tail"])
    if impl == "factored":
        return minimal_flops(batch, N_ACTIONS, m)
    if impl in ("stacked", "trunk"):  # min(K, A) rows an agent, whichever actions were taken
        return minimal_flops(batch, min(slots, N_ACTIONS), m)
    return minimal_flops(batch, distinct, m)


def minimal_bytes(batch: int, slots: int, dtype: str) -> float:
    """Read state, actions, mask and parameters once; write the five outputs once."""
    e = DTYPE_BYTES[dtype]
    outputs = 2 * slots + 3 * N_ACTIONS
    return (
        batch * (STATE_DIM * e + slots * (INDEX_BYTES + MASK_BYTES) + outputs * e)
        + head_macs()["params"] * e
    )


# ---------------------------------------------------------------------------- formatting
def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1e3:.3g}" if seconds * 1e3 < 100 else f"{seconds * 1e3:.0f}"


def _times(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _median(kernel: dict[Key, dict], key: Key) -> float | None:
    return kernel[key]["median"] if key in kernel else None


def _time_ratio(kernel: dict[Key, dict], num: Key, den: Key) -> float | None:
    """num's median time over den's; None unless both were measured, in the same file."""
    if num not in kernel or den not in kernel or _split(kernel, num, den):
        return None
    return kernel[num]["median"] / kernel[den]["median"]


def _split(records: dict, a, b) -> bool:
    """Whether records ``a`` and ``b`` were both measured, but in different files."""
    return a in records and b in records and records[a]["file"] != records[b]["file"]


def _status(value: float | None, holds: bool) -> str:
    if value is None:
        return NOT_MEASURED
    return "met" if holds else "**missed**"


def machines_section(runs: list[Run]) -> list[str]:
    rows = []
    for run in runs:
        info = run.machine.get("cmfq", {})
        rows.append(
            [
                f"`{run.path.name}`",
                run.date[:19],
                info.get("device", "?"),
                f"{info.get('cpu_model', '?')} ({info.get('cpu_family_model', '?')}, "
                f"{info.get('cpu_mhz', float('nan')):.0f} MHz, {'/'.join(info.get('simd', []))})",
                f"{info.get('torch_threads', '?')} of {info.get('logical_cpus', '?')}",
                info.get("torch", "?"),
                info.get("cuda", "?"),
                info.get("gpu", "?"),
            ]
        )
    return ["## Machines", ""] + _table(
        ["run", "date (UTC)", "device", "CPU", "threads", "torch", "CUDA", "GPU"], rows
    )


# Speed-ups the fused op must reach on the CPU at B=1024, K=32, float32, 2 threads, per mode.
CPU_TARGETS = {
    "forward": (("generic", 10.0), ("compiled", 1.0), ("factored", 1.0)),
    "forward+backward": (("generic", 10.0), ("compiled", 1.0), ("factored", 3.0)),
}
CPU_PEAK_TARGET = 0.5  # forward, fraction of the nominal FP32 peak at B >= 1024, K = 32
# On a GPU, B = 16384, K = 32, float32: (mode, other implementation, least speed-up), for each
# formulation of the fused op; bfloat16 over float32; B = 131072: fraction of the roofline.
GPU_TARGETS = (
    ("forward", "generic", 20.0),
    ("forward", "compiled", 3.0),
    ("forward", "factored", 5.0),
    ("forward+backward", "factored", 3.0),
)
GPU_HALF_SPEEDUP = 1.5
GPU_ROOFLINE_TARGET = 0.3


def gpu_model(runs: list[Run]) -> str:
    """The GPU whose timings the tables show: that of the last run with CUDA timings."""
    cuda_runs = [run for run in runs if any(key[0] == "cuda" for key in run.kernel)]
    name = cuda_runs[-1].machine.get("cmfq", {}).get("gpu", "") if cuda_runs else ""
    return next((model for model in GPU_BANDWIDTH if model in name), "H100")


def targets_section(
    runs: list[Run], kernel: dict[Key, dict], training: dict[str, dict]
) -> list[str]:
    gpu = gpu_model(runs)
    rows = []
    for mode in MODES:
        base = ("cpu", "float32", mode, 1024, 32)
        for impl, factor in CPU_TARGETS[mode]:
            pair = (*base, impl), (*base, "fused")
            ratio = _time_ratio(kernel, *pair)
            rows.append(
                [
                    f"CPU B=1024 K=32 fp32 2 threads, {mode}: fused vs {impl}",
                    f"> {factor:g}x" if factor == 1.0 else f">= {factor:g}x",
                    _times(ratio),
                    NOT_ONE_RUN if _split(kernel, *pair)
                    else _status(ratio, ratio is not None and ratio >= factor),
                ]
            )
    for batch in (b for b in BATCHES["cpu"] if b >= 1024):
        fused = kernel.get(("cpu", "float32", "forward", batch, 32, "fused"))
        peak = _cpu_peak(runs, fused["threads"]) if fused else None
        fraction = None
        if peak and fused:
            fraction = minimal_flops(batch, fused["distinct_actions"]) / fused["median"] / peak[0]
        rows.append(
            [
                f"CPU B={batch} K=32 fp32 2 threads, forward: fraction of FP32 peak",
                f">= {CPU_PEAK_TARGET:.0%}",
                "–" if fraction is None else f"{fraction:.1%}",
                _status(fraction, fraction is not None and fraction >= CPU_PEAK_TARGET),
            ]
        )
    for op in ("fused", "stacked", "trunk"):
        for mode, impl, factor in GPU_TARGETS:
            base = ("cuda", "float32", mode, 16384, 32)
            pair = (*base, impl), (*base, op)
            ratio = _time_ratio(kernel, *pair)
            rows.append(
                [
                    f"{gpu} B=16384 K=32 fp32, {mode}: {op} vs {impl}",
                    f">= {factor:g}x",
                    _times(ratio),
                    NOT_ONE_RUN if _split(kernel, *pair)
                    else _status(ratio, ratio is not None and ratio >= factor),
                ]
            )
        pair = (("cuda", "float32", "forward", 16384, 32, op),
                ("cuda", "bfloat16", "forward", 16384, 32, op))
        ratio = _time_ratio(kernel, *pair)
        rows.append(
            [
                f"{gpu} B=16384 K=32, forward: {op} bf16 vs fp32",
                f">= {GPU_HALF_SPEEDUP:g}x",
                _times(ratio),
                NOT_ONE_RUN if _split(kernel, *pair)
                else _status(ratio, ratio is not None and ratio >= GPU_HALF_SPEEDUP),
            ]
        )
        for dtype in DTYPES["cuda"]:
            fraction = _roofline_fraction(kernel, gpu, dtype, 131072, 32, op)
            rows.append(
                [
                    f"{gpu} B=131072 K=32 {dtype}, forward: {op}, fraction of roofline",
                    f">= {GPU_ROOFLINE_TARGET:.0%}",
                    "–" if fraction is None else f"{fraction:.1%}",
                    _status(fraction, fraction is not None and fraction >= GPU_ROOFLINE_TARGET),
                ]
            )
    ratio = _training_ratio(training)
    rows.append(
        [
            "CPU 40x40 battle: cmfq time per env step / mfq's",
            "<= 1.3x",
            _times(ratio),
            NOT_ONE_RUN if _split(training, "cmfq", "mfq")
            else _status(ratio, ratio is not None and ratio <= 1.3),
        ]
    )
    return [
        "## Targets",
        "",
        "Ratios are the other implementation's median time over the fused op's, both "
        "measured in the same run; each speed-up is checked for forward and for "
        "forward+backward. The fraction of peak is the minimal FLOPs (roofline section) over the "
        "time, against the nominal peak of two cores.",
        "",
    ] + _table(["target", "wanted", "measured", "status"], rows)


def _roofline_fraction(
    kernel: dict[Key, dict], gpu: str, dtype: str, batch: int, slots: int, op: str = "fused"
):
    key = ("cuda", dtype, "forward", batch, slots, op)
    if key not in kernel:
        return None
    bound = _roofline_seconds(gpu, batch, slots, dtype, kernel[key]["distinct_actions"])
    return bound / kernel[key]["median"]


def _roofline_seconds(gpu: str, batch: int, slots: int, dtype: str, distinct: float) -> float:
    return max(
        minimal_flops(batch, distinct) / GPU_PEAK_FLOPS[dtype],
        minimal_bytes(batch, slots, dtype) / GPU_BANDWIDTH[gpu],
    )


def timing_section(kernel: dict[Key, dict], device: str) -> list[str]:
    title = {"cpu": "CPU", "cuda": "GPU"}[device]
    lines = [f"## {title} timings", ""]
    measured = any(key[0] == device for key in kernel)
    if not measured:
        lines += [
            f"**{NOT_MEASURED}**: no run on a {title} is recorded in the files given. "
            "The cases are "
            f"B in {BATCHES[device]}, K in {SLOTS[device]}, "
            f"{' and '.join(DTYPES[device])}, forward and forward+backward.",
            "",
        ]
        return lines
    lines += [
        "Median milliseconds per call; `x` columns are each implementation's time over "
        "the fused op's (above 1: fused is faster).",
        "",
    ]
    impls = IMPLS[device]
    for dtype in DTYPES[device]:
        for mode in MODES:
            rows = []
            for batch in BATCHES[device]:
                for slots in SLOTS[device]:
                    case = (device, dtype, mode, batch, slots)
                    ratios = [_time_ratio(kernel, (*case, i), (*case, "fused")) for i in impls[1:]]
                    rows.append(
                        [str(batch), str(slots)]
                        + [_ms(_median(kernel, (*case, i))) for i in impls]
                        + [_times(r) for r in ratios]
                    )
            lines += [f"### {title}, {dtype}, {mode}", ""]
            lines += _table(
                ["B", "K", *[f"{i} ms" for i in impls], *[f"{i} x" for i in impls[1:]]], rows
            )
            lines.append("")
    return lines


def roofline_section(runs: list[Run], kernel: dict[Key, dict]) -> list[str]:
    m = head_macs()
    lines = [
        "## Roofline",
        "",
        "Minimal work of the forward for B agents with K slots, A actions, state size S, "
        f"encoder widths {ACTION_HIDDEN}, trunk widths {HIDDEN} (multiply-adds per row: "
        f"state half of the first trunk layer {m['state']}, an action vector to the first "
        f"layer {m['action']}, the rest of the trunk {m['tail']}), with D the mean number of "
        "distinct valid actions among an agent's neighbours:",
        "",
        "- FLOPs = 2 [B (state + 2 (action + tail) + D tail) + A action]: the state half once "
        "per agent, the mean and the causal mean action through the head, one trunk evaluation "
        "per distinct neighbour action (its first layer is a row of the A-row action table "
        "added to the state half); softmax and KL are < 1% and left out.",
        "- bytes = B (S e + K (8 + 1) + (2K + 3A) e) + P e: read the state (e bytes per "
        f"number), the int64 actions and the bool mask, write the five outputs, read the "
        f"P = {m['params']} parameters once.",
        "- generic, compiled and naive multiply 2 B (K + 2)(state + action + tail) FLOPs "
        "(the whole head per intervention row); factored multiplies the minimal FLOPs with "
        "D = A.",
        "",
    ]
    lines += _cpu_roofline(runs, kernel)
    lines += _gpu_roofline(kernel, gpu_model(runs))
    return lines


def _cpu_peak(runs: list[Run], threads: int) -> tuple[float, str] | None:
    """Nominal FP32 peak of ``threads`` cores of the CPU that the runs describe."""
    for run in runs:
        info = run.machine.get("cmfq", {})
        if info.get("device") != "cpu":
            continue
        simd = next((s for s in CPU_FLOP_PER_CYCLE if s in info.get("simd", [])), None)
        if simd is None or not math.isfinite(info.get("cpu_mhz", float("nan"))):
            return None
        per_cycle = CPU_FLOP_PER_CYCLE[simd]
        peak = threads * info["cpu_mhz"] * 1e6 * per_cycle
        return peak, (
            f"{threads} threads x {info['cpu_mhz']:.0f} MHz x {per_cycle} FP32 FLOP/cycle "
            f"({simd} FMA)"
        )
    return None


def _cpu_roofline(runs: list[Run], kernel: dict[Key, dict]) -> list[str]:
    if not any(key[0] == "cpu" for key in kernel):
        return []
    threads = {v["threads"] for k, v in kernel.items() if k[0] == "cpu"}
    peak = _cpu_peak(runs, threads.pop()) if len(threads) == 1 else None
    lines = ["### CPU, float32, forward", ""]
    if peak:
        lines += [
            f"Nominal peak {peak[0] / 1e9:.0f} GFLOP/s = {peak[1]}; the CPU is far from "
            "memory-bound here (hundreds of FLOPs per byte).",
            "",
        ]
    lines += [
        "Achieved GFLOP/s: *useful* = minimal FLOPs / time (comparable across "
        "implementations), *executed* = the implementation's own FLOPs / time.",
        "",
    ]
    rows = []
    for batch in BATCHES["cpu"]:
        for slots in SLOTS["cpu"]:
            fused = kernel.get(("cpu", "float32", "forward", batch, slots, "fused"))
            distinct = fused["distinct_actions"] if fused else expected_distinct_actions(slots)
            useful = minimal_flops(batch, distinct)
            row = [str(batch), str(slots), f"{distinct:.1f}", f"{useful / 1e9:.3g}"]
            for impl in IMPLS["cpu"]:
                t = _median(kernel, ("cpu", "float32", "forward", batch, slots, impl))
                if t is None:
                    row.append("–")
                    continue
                done = executed_flops(impl, batch, slots, distinct)
                row.append(f"{useful / t / 1e9:.1f} ({done / t / 1e9:.1f})")
            if peak and fused:
                row.append(f"{useful / fused['median'] / peak[0]:.1%}")
            else:
                row.append("–")
            rows.append(row)
    lines += _table(
        ["B", "K", "D", "min GFLOP"]
        + [f"{i} useful (executed)" for i in IMPLS["cpu"]]
        + ["fused / peak"],
        rows,
    )
    return lines + [""]


def _gpu_roofline(kernel: dict[Key, dict], gpu: str) -> list[str]:
    lines = [
        f"### {gpu}, forward",
        "",
        f"Peaks: FP32 {GPU_PEAK_FLOPS['float32'] / 1e12:.0f} TFLOP/s (non-tensor), BF16 "
        f"{GPU_PEAK_FLOPS['bfloat16'] / 1e12:.0f} TFLOP/s (tensor, dense), memory "
        f"{GPU_BANDWIDTH[gpu] / 1e12:.2f} TB/s. Roofline time = max(FLOPs / peak, bytes / "
        "bandwidth), for D expected under the benchmark's random actions.",
        "",
    ]
    rows = []
    for dtype in DTYPES["cuda"]:
        for slots in SLOTS["cuda"]:
            batch = BATCHES["cuda"][-1]
            key = ("cuda", dtype, "forward", batch, slots, "fused")
            distinct = (
                kernel[key]["distinct_actions"]
                if key in kernel
                else expected_distinct_actions(slots)
            )
            flops = minimal_flops(batch, distinct)
            nbytes = minimal_bytes(batch, slots, dtype)
            bound = _roofline_seconds(gpu, batch, slots, dtype, distinct)
            compute_bound = flops / GPU_PEAK_FLOPS[dtype] >= nbytes / GPU_BANDWIDTH[gpu]
            limit = "compute" if compute_bound else "memory"
            fraction = _roofline_fraction(kernel, gpu, dtype, batch, slots)
            rows.append(
                [
                    dtype,
                    str(batch),
                    str(slots),
                    f"{distinct:.1f}",
                    f"{flops / 1e9:.1f}",
                    f"{nbytes / 1e6:.0f}",
                    f"{flops / nbytes:.0f}",
                    f"{bound * 1e6:.0f} ({limit})",
                    _ms(kernel[key]["median"]) if key in kernel else NOT_MEASURED,
                    f"{fraction:.1%}" if fraction is not None else NOT_MEASURED,
                ]
            )
    lines += _table(
        [
            "dtype",
            "B",
            "K",
            "D",
            "min GFLOP",
            "min MB",
            "FLOP/byte",
            "roofline µs (bound)",
            "fused ms",
            "fraction of roofline",
        ],
        rows,
    )
    return lines + [""]


def _training_ratio(training: dict[str, dict], algo: str = "cmfq") -> float | None:
    """``algo``'s time per env step over mfq's; None unless both were measured, in one file."""
    if algo not in training or "mfq" not in training or _split(training, algo, "mfq"):
        return None
    return _seconds_per_step(training[algo]) / _seconds_per_step(training["mfq"])


def _seconds_per_step(record: dict) -> float:
    return record["median"] / record["env_steps"]


def training_section(training: dict[str, dict]) -> list[str]:
    lines = ["## Training throughput (`cmfq train`, 40x40 battle, CPU)", ""]
    if not training:
        return lines + [
            f"**{NOT_MEASURED}**: the run recorded no training benchmark.",
            "",
        ]
    rows = []
    for algo in ALGOS:
        if algo not in training:
            rows.append([algo, "–", "–", "–"])
            continue
        per_step = _seconds_per_step(training[algo])
        rows.append(
            [
                algo,
                f"{1 / per_step:.1f}",
                f"{per_step * 1e3:.1f}",
                _times(_training_ratio(training, algo)),
            ]
        )
    first = next(iter(training.values()))
    setup = ", ".join(f"{k}={v}" for k, v in sorted(first.get("setup", {}).items()))
    return (
        lines
        + [f"Setup: {setup}.", ""]
        + _table(["algo", "env steps / s", "ms / env step", "time per step vs mfq"], rows)
        + [""]
    )


def plot(kernel: dict[Key, dict], path: Path) -> bool:
    """Time vs B (log-log) per implementation, K = 32, float32; one panel per device and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (d, m)
        for d in ("cpu", "cuda")
        for m in MODES
        if any(k[0] == d and k[2] == m for k in kernel)
    ]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (device, mode) in zip(axes[0], panels, strict=True):
        for impl in IMPLS[device]:
            points = [
                (b, kernel[(device, "float32", mode, b, 32, impl)]["median"] * 1e3)
                for b in BATCHES[device]
                if (device, "float32", mode, b, 32, impl) in kernel
            ]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=impl)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="agents B",
            ylabel="median ms per call",
            title=f"{device}, float32, K=32, {mode}",
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(runs: list[Run], out: Path, notes: Path | None) -> str:
    kernel = {k: v for run in runs for k, v in run.kernel.items()}
    training = {k: v for run in runs for k, v in run.training.items()}
    files = " ".join(str(run.path) for run in runs)
    lines = [
        "# Performance of the causal-weights op",
        "",
        "<!-- Generated by benchmarks/report.py: edit the notes file, not this page. -->",
        "",
        "Reproduce:",
        "",
        "```",
        "pytest benchmarks/ --benchmark-only --benchmark-json benchmarks/results/RUN.json"
        "            # CPU, 2 threads",
        "pytest benchmarks/ --benchmark-only --device cuda --benchmark-json "
        "benchmarks/results/RUN.json",
        f"python benchmarks/report.py {files} --out {out}" + (f" --notes {notes}" if notes else ""),
        "```",
        "",
        "Every implementation gets the same head (action branch scaled up so that the effects "
        "matter), state and actions (1/8 of the slots empty); its outputs, and for "
        "forward+backward its gradients with respect to the state and every head parameter, "
        "are checked against the generic path (docs/spec.md's reference) in float64 on the same "
        "inputs, within tolerances from a rounding-error model (Notes, \"Accuracy check\"), "
        "before it is timed. Forward runs under "
        "`torch.no_grad()`; forward+backward differentiates a fixed linear function of "
        "`q_causal`. Implementations: `fused` = `cmfq.causal_weights` with the "
        "`MeanFieldHead`, its per-agent kernel (`formulation=\"per_agent\"`, the CPU's "
        "default and CUDA's up to 1024 agents); `stacked` = the same in its stacked formulation "
        "(`formulation=\"stacked\"`); `trunk` = that with its trunk in one "
        "CUDA launch (`formulation=\"fused_trunk\"`, CUDA's default above 1024 agents); "
        "`generic` = the same call with a plain callable (every intervention a "
        "row of one batch); `compiled` = `torch.compile` of `generic`; `factored` = hand-written "
        "PyTorch (state half once, the A one-hot interventions batched, KL gathered); `naive` = "
        "a Python loop over the neighbour slots.",
        "",
    ]
    lines += machines_section(runs) + [""]
    lines += targets_section(runs, kernel, training) + [""]
    image = out.with_name(out.stem + "_time_vs_batch.png")
    if plot(kernel, image):
        lines += ["## Time vs number of agents", "", f"![time vs B]({image.name})", ""]
    lines += timing_section(kernel, "cpu") + timing_section(kernel, "cuda")
    lines += roofline_section(runs, kernel)
    lines += training_section(training)
    if notes:
        lines += ["## Notes", "", notes.read_text().strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="pytest-benchmark JSON files")
    parser.add_argument("--out", type=Path, required=True, help="markdown page to write")
    parser.add_argument("--notes", type=Path, help="markdown appended as the Notes section")
    args = parser.parse_args(argv)
    runs = [load(path) for path in args.results]
    args.out.write_text(render(runs, args.out, args.notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
