"""Builds cmfq's C++ extension (always) and its CUDA kernel (when torch has CUDA and nvcc is found).

Otherwise, e.g. when nvcc's major version differs from torch's CUDA, it builds for the CPU only
and prints why (pip shows it with -v). Overrides: CMFQ_CPU_ONLY=1 never builds CUDA;
CMFQ_FORCE_CUDA=1 always tries (e.g. on a build machine without a GPU); TORCH_CUDA_ARCH_LIST picks
the GPU architectures (default "8.0;9.0+PTX").
Install with ``pip install --no-build-isolation .`` so that it links against the installed torch.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = Path(__file__).resolve().parent
CSRC = Path("csrc") / "cmfq"
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def extension_sources() -> tuple[list[str], list[str]]:
    """(CPU sources, CUDA-only sources): every .cpp but those in cuda/, then cuda/'s .cpp glue and
    the .cu kernels. CMakeLists.txt lists the same (test_build_sync.py)."""
    def found(pattern: str) -> list[str]:
        return sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC).rglob(pattern))

    cuda_dir = str(CSRC / "cuda") + os.sep
    cuda_glue = [p for p in found("*.cpp") if p.startswith(cuda_dir)]
    cpu = [p for p in found("*.cpp") if p not in cuda_glue]
    return cpu, cuda_glue + found("*.cu")


def nvcc_version(cuda_home: str) -> str | None:
    """The release of CUDA_HOME's nvcc ("13.0"), or None if it cannot be run."""
    try:
        output = subprocess.run(
            [str(Path(cuda_home) / "bin" / "nvcc"), "--version"],
            capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"release (\d+\.\d+)", output)
    return match.group(1) if match else None


def cuda_build_problem(
    torch_cuda: str | None, cuda_home: str | None, nvcc: str | None
) -> str | None:
    """Why the CUDA kernel cannot be built against this torch, or None if it can."""
    if torch_cuda is None:
        return "the installed torch is a CPU-only build"
    if cuda_home is None:
        return "no CUDA toolkit was found (set CUDA_HOME or put nvcc on the PATH)"
    if nvcc is None:
        return f"{cuda_home}/bin/nvcc does not report its version"
    if nvcc.split(".")[0] != torch_cuda.split(".")[0]:
        return (
            f"nvcc {nvcc} and torch's CUDA {torch_cuda} differ in major version (install the "
            f"CUDA {torch_cuda.split('.')[0]} toolkit, or a torch built for CUDA {nvcc})"
        )
    return None


def build_cuda() -> bool:
    if os.environ.get("CMFQ_CPU_ONLY") == "1":
        return False
    if os.environ.get("CMFQ_FORCE_CUDA") == "1":
        return True
    problem = cuda_build_problem(
        torch.version.cuda, CUDA_HOME, nvcc_version(CUDA_HOME) if CUDA_HOME else None
    )
    if problem:
        print(f"cmfq: building for the CPU only: {problem}.", file=sys.stderr)
    return problem is None


def extension():
    cpu_sources, cuda_sources = extension_sources()
    # No code here relies on floating-point traps; without them GCC can turn the kernels' selects
    # (ReLU, the change through a ReLU) into vector blends instead of branches. -g0 overrides the
    # -g of Python's own flags: debug information for torch's headers doubled the compile time
    # and made the library ten times larger.
    cxx_flags = ["-O3", "-fopenmp", "-fno-trapping-math", "-g0"]
    options = dict(
        name="cmfq._C",
        include_dirs=[str(ROOT / CSRC)],
        extra_link_args=["-fopenmp"],
    )
    if not build_cuda():
        return CppExtension(sources=cpu_sources, extra_compile_args={"cxx": cxx_flags}, **options)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
    return CUDAExtension(
        sources=cpu_sources + cuda_sources,
        define_macros=[("CMFQ_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
        **options,
    )


# pip runs this file as __main__; tests import extension_sources() without building.
if __name__ == "__main__":
    setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension})
