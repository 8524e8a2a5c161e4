"""benchmarks/report.py pairs timings of one run only: a ratio of two machines' times is refused."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def report(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import report

    yield report
    sys.modules.pop("report", None)
    sys.modules.pop("shapes", None)


def write_run(path: Path, medians: dict[str, float]) -> Path:
    """A pytest-benchmark file with the CPU float32 forward case B=1024, K=32 of each impl."""
    benchmarks = [
        {"extra_info": {"kind": "causal_weights", "device": "cpu", "dtype": "float32",
                        "mode": "forward", "batch": 1024, "slots": 32, "impl": impl,
                        "threads": 2, "distinct_actions": 12.0},
         "stats": {"median": median, "rounds": 5}}
        for impl, median in medians.items()
    ]
    path.write_text(json.dumps({"datetime": "today", "machine_info": {},
                                "benchmarks": benchmarks}))
    return path


def target_row(page: str, impl: str) -> str:
    return next(line for line in page.splitlines()
                if line.startswith(f"| CPU B=1024 K=32 fp32 2 threads, forward: fused vs {impl} "))


def test_a_ratio_pairs_timings_of_one_run_only(report, tmp_path):
    one = write_run(tmp_path / "one.json", {"fused": 0.01, "generic": 0.05})
    other = write_run(tmp_path / "other.json", {"factored": 0.02})
    page = report.render([report.load(one), report.load(other)], tmp_path / "p.md", None)
    assert "| 5.00x | **missed** |" in target_row(page, "generic")
    assert f"| – | {report.NOT_ONE_RUN} |" in target_row(page, "factored")
    # The timing table shows both times, but no ratio between the runs.
    row = next(line for line in page.splitlines() if line.startswith("| 1024 | 32 | 10 |"))
    assert row.split(" | ")[2:7] == ["10", "50", "–", "20", "–"]
    assert row.split(" | ")[7:] == ["5.00x", "–", "–", "– |"]
