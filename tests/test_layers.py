"""The package's floors: each part imports only from the floors below it (or its own)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cmfq"

# The op at the bottom; pretrained models (data and a stdlib loader) beside the op, so that
# training can resolve ``pretrained:NAME``; options (dataclass fields with help and bounds, for
# the envs', algorithms' and run's options) there too; the Ray connection above training, so
# that training never needs Ray; evaluation and sweeps as peers on it (neither imports the
# other); the command line on top.
FLOORS = {
    "op": 0, "pretrained": 0, "options": 0, "envs": 1, "algos": 2, "training": 3, "cluster": 4,
    "evaluation": 5, "sweep": 5, "cli": 6,
}
# The package's own __init__ (the public API: ``from cmfq import causal_weights``) and the
# compiled kernels belong to the op.
OP_MODULES = {"__init__", "_C", "op"}
SUBMODULES = {
    p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()
}


def part_of(module: str) -> str:
    """The part (a key of FLOORS) that ``cmfq.<...>`` belongs to."""
    name = module.split(".")[1] if "." in module else "__init__"
    return "op" if name in OP_MODULES or name not in SUBMODULES else name


def cmfq_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cmfq"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "cmfq":
                found |= {f"cmfq.{a.name}" for a in node.names}
            elif node.module.startswith("cmfq."):
                found.add(node.module)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_from_its_floor_or_below(path):
    module = "cmfq." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    mine = part_of(module)
    assert mine in FLOORS, f"{module}: a new part needs its floor in FLOORS"
    above = sorted(
        m for m in cmfq_imports(path)
        if part_of(m) != mine and FLOORS[part_of(m)] >= FLOORS[mine]
    )
    assert not above, f"{module} imports {above} from its own floor or above"
