"""The summary of a sweep: one row per finished run, its grid values and its last round's
metrics, as CSV (which ``cmfq plot`` and ``cmfq tournament`` take in place of the run folders)
and as a Markdown table."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from cmfq.evaluation.summaries import RUN_COLUMN
from cmfq.sweep.spec import Run, value_text
from cmfq.training.run_folder import RunFolder

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"


def summary_rows(runs: Sequence[Run]) -> list[dict[str, str]]:
    """Per run: its folder (relative to the summary), its grid values, then the last row of its
    ``metrics.csv`` as written."""
    rows = []
    for run in runs:
        last = RunFolder(run.config.out).last_metrics()
        values = {key: value_text(value) for key, value in run.values.items()}
        rows.append({RUN_COLUMN: run.name, **values, **last})
    return rows


def write_summary(out: Path, runs: Sequence[Run]) -> Path:
    """Write ``SUMMARY_CSV`` and ``SUMMARY_MD`` into ``out``; returns the CSV's path."""
    rows = summary_rows(runs)
    columns = list(dict.fromkeys(key for row in rows for key in row)) or [RUN_COLUMN]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / SUMMARY_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Sweep summary",
        "",
        f"{len(rows)} finished runs; the metrics are those of each run's last round "
        "(`metrics.csv`).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    (out / SUMMARY_MD).write_text("\n".join(lines) + "\n")
    return out / SUMMARY_CSV


def _cell(text: str) -> str:
    """Numbers to 4 significant digits, the rest as is."""
    try:
        number = float(text)
    except ValueError:
        return text
    return text if number.is_integer() and "." not in text else f"{number:.4g}"
