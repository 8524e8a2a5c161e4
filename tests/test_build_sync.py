"""setup.py and CMakeLists.txt build the same sources, and every source in csrc is built; setup.py
builds the CUDA kernel only with a toolkit that matches torch's CUDA."""

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cmake_sources(variable: str) -> list[str]:
    text = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert block, f"{variable} not found in CMakeLists.txt"
    return sorted(block.group(1).split())


def test_cmake_and_setup_build_the_same_sources():
    cpu, cuda = runpy.run_path(str(ROOT / "setup.py"), run_name="build_sync")["extension_sources"]()
    assert cmake_sources("CMFQ_CPU_SOURCES") == sorted(cpu)
    assert cmake_sources("CMFQ_CUDA_SOURCES") == sorted(cuda)
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.c*"))
    assert sorted(cpu + cuda) == on_disk


@pytest.mark.parametrize(
    "torch_cuda, cuda_home, nvcc, problem",
    [
        ("12.8", "/cuda", "12.4", None),
        ("12.8", "/cuda", "13.0", "differ in major version"),
        (None, "/cuda", "13.0", "CPU-only build"),
        ("12.8", None, None, "no CUDA toolkit"),
        ("12.8", "/cuda", None, "does not report its version"),
    ],
)
def test_setup_builds_cuda_only_when_toolkit_and_torch_agree(torch_cuda, cuda_home, nvcc, problem):
    cuda_build_problem = runpy.run_path(str(ROOT / "setup.py"), run_name="build_sync")[
        "cuda_build_problem"
    ]
    found = cuda_build_problem(torch_cuda, cuda_home, nvcc)
    assert found is None if problem is None else problem in found
