"""Every script of examples/, experiments/ and benchmarks/ imports, and uses cmfq's public API only.

What is public is defined here, once (docs/architecture.md points here):

- the names of ``cmfq`` itself that it lists in ``cmfq.__all__`` (the op: ``causal_weights``,
  ``MeanFieldHead``...);
- every module of the parts above the op (``cmfq.envs``, ``cmfq.algos``, ``cmfq.training``,
  ``cmfq.evaluation``, ``cmfq.sweep``, ``cmfq.pretrained``, ``cmfq.options``, ``cmfq.cli``...),
  with its names, except those that start with an underscore, in a module's path or a name.

The op's own modules (the part ``op`` of tests/test_layers.py) and the compiled ``cmfq._C`` are
internal: a script reaches the op through ``cmfq``.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_layers import part_of

import cmfq

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    p for folder in ("examples", "experiments", "benchmarks") for p in (ROOT / folder).rglob("*.py")
)
INTERNAL_USE = {
    "benchmarks/causal_impls.py": "the hand-written PyTorch baselines use the op's own KL and "
    "weights (cmfq.divergence) until the op's modules say what they export",
}
"""Scripts known to use the op's internals, each with why; the test holds them to it (strict)."""


def is_public_module(module: str) -> bool:
    """Whether ``cmfq.<...>`` may be imported by a script (``cmfq`` itself may)."""
    if module == "cmfq":
        return True
    if any(part.startswith("_") for part in module.split(".")):
        return False
    return part_of(module) != "op"


def is_public(module: str, name: str) -> bool:
    """Whether ``name`` may be taken from the public module ``module``: from ``cmfq``, one of
    ``cmfq.__all__`` or a public module; from any other, a name without a leading underscore."""
    if module == "cmfq":
        return name in cmfq.__all__ or is_public_module(f"cmfq.{name}")
    return not name.startswith("_")


def internal_uses(path: Path) -> list[str]:
    """What ``path`` takes from cmfq that is not public: its imports, and the attributes it
    reads from the cmfq modules it imported (``cmfq.ops``, ``learner._x``)."""
    tree = ast.parse(path.read_text())
    found: list[str] = []
    modules: dict[str, str] = {}  # a name bound by an import -> the cmfq module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "cmfq":
                    continue
                if not is_public_module(alias.name):
                    found.append(alias.name)
                if alias.asname:
                    modules[alias.asname] = alias.name
                else:
                    modules["cmfq"] = "cmfq"
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "cmfq":
                continue
            if not is_public_module(node.module):
                found.append(node.module)
                continue
            for alias in node.names:
                if not is_public(node.module, alias.name):
                    found.append(f"{node.module}.{alias.name}")
                elif is_public_module(f"{node.module}.{alias.name}") and node.module != "cmfq":
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                elif node.module == "cmfq" and alias.name not in cmfq.__all__:
                    modules[alias.asname or alias.name] = f"cmfq.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = modules.get(node.value.id)
            if module is not None and not is_public(module, node.attr):
                found.append(f"{module}.{node.attr}")
    return sorted(set(found))


def test_the_definition_tells_public_from_internal():
    assert is_public("cmfq", "causal_weights") and is_public("cmfq", "pretrained")
    assert not is_public("cmfq", "_C") and not is_public_module("cmfq._C")
    assert is_public_module("cmfq.training.trainer") and is_public_module("cmfq.envs")
    assert not is_public("cmfq.training.trainer", "_run")
    op = [m for m in ("cmfq.causal", "cmfq.divergence", "cmfq.op.divergence")
          if part_of(m) == "op"]
    assert op and not any(map(is_public_module, op))


def _script_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.xfail(reason=INTERNAL_USE[_script_id(p)], strict=True))
    if _script_id(p) in INTERNAL_USE else p
    for p in SCRIPTS
], ids=_script_id)
def test_uses_only_the_public_api(path):
    assert not internal_uses(path), f"{_script_id(path)} uses cmfq's internals"


IMPORT_ALL = """
import json, runpy, sys, traceback
failed = {}
for path in sys.argv[1:]:
    folder = path.rsplit("/", 1)[0]
    sys.path.insert(0, folder)  # as when run: its folder's modules import
    try:
        runpy.run_path(path, run_name="imported")  # not __main__: defined, not run
    except BaseException:
        failed[path] = traceback.format_exc(limit=-3)
    finally:
        sys.path.remove(folder)
print(json.dumps(failed))
"""


@pytest.fixture(scope="module")
def import_failures() -> dict[str, str]:
    """Each script that fails to import, with its traceback: all imported in one fresh
    interpreter (a few seconds; some patch cmfq's modules when imported, so not in this one)."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, *map(str, SCRIPTS)], capture_output=True, text=True,
        timeout=300, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("path", SCRIPTS, ids=_script_id)
def test_imports(path, import_failures):
    assert str(path) not in import_failures, import_failures.get(str(path))
