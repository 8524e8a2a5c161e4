"""Builds cmfq's C++ extension (always) and its CUDA kernel (when torch has CUDA and nvcc is found).

Overrides: CMFQ_CPU_ONLY=1 never builds CUDA; CMFQ_FORCE_CUDA=1 always does (e.g. on a build
machine without a GPU); TORCH_CUDA_ARCH_LIST picks the GPU architectures (default "8.0;9.0+PTX").
Install with ``pip install --no-build-isolation .`` so that it links against the installed torch.
"""

import os
from pathlib import Path

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = Path(__file__).resolve().parent
CSRC = Path("csrc") / "cmfq"
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def extension_sources() -> tuple[list[str], list[str]]:
    """(CPU sources, CUDA-only sources); CMakeLists.txt lists the same (test_build_sync.py)."""
    cpp = sorted(str(p) for p in (ROOT / CSRC).glob("*.cpp"))
    cpp = [str(Path(p).relative_to(ROOT)) for p in cpp]
    cuda_glue = [p for p in cpp if p.endswith("_cuda.cpp")]
    kernels = sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC).glob("*.cu"))
    return [p for p in cpp if p not in cuda_glue], cuda_glue + kernels


def build_cuda() -> bool:
    if os.environ.get("CMFQ_CPU_ONLY") == "1":
        return False
    if os.environ.get("CMFQ_FORCE_CUDA") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def extension():
    cpu_sources, cuda_sources = extension_sources()
    # No code here relies on floating-point traps; without them GCC can turn the kernels' selects
    # (ReLU, the change through a ReLU) into vector blends instead of branches.
    cxx_flags = ["-O3", "-fopenmp", "-fno-trapping-math"]
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
