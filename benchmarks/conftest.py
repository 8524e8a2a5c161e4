"""Options and machine description of the benchmark run (usage: docs/performance.md)."""

from __future__ import annotations

import os
import platform

import pytest
import torch

import cmfq


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cmfq benchmarks")
    group.addoption("--device", default="cpu", choices=("cpu", "cuda"), help="where to run")
    group.addoption(
        "--threads", type=int, default=2, help="torch intra-op threads (the CPU targets use 2)"
    )
    group.addoption(
        "--bench-seconds",
        type=float,
        default=0.6,
        help="about how long each measurement runs (rounds = this / one call, at least 3)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--device") == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: torch sees no CUDA device on this machine")
    torch.set_num_threads(config.getoption("--threads"))


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    cuda = torch.cuda.is_available()
    machine_info["cmfq"] = {
        "cpu_model": cpu.get("model name", platform.processor() or platform.machine()),
        "cpu_family_model": f"{cpu.get('cpu family', '?')}/{cpu.get('model', '?')}",
        "cpu_mhz": float(cpu.get("cpu MHz", "nan")),
        "simd": [f for f in ("avx512f", "avx2", "fma") if f in flags],
        "logical_cpus": os.cpu_count(),
        "torch_threads": config.getoption("--threads"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "gpu": torch.cuda.get_device_name() if cuda else "none",
        "device": config.getoption("--device"),
        "cmfq_cuda_kernel_built": cmfq.cuda_built(),
    }


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--device")


@pytest.fixture(scope="session")
def bench_seconds(request: pytest.FixtureRequest) -> float:
    return request.config.getoption("--bench-seconds")
