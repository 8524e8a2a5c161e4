"""setup.py and CMakeLists.txt build the same sources, and every source in csrc is built."""

import re
import runpy
from pathlib import Path

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
