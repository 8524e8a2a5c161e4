"""The summary of a set of runs (a sweep writes one): a row per finished run, with its folder,
its grid values and its last round's metrics, as CSV and as a Markdown table. ``cmfq plot`` and
``cmfq tournament`` take the CSV in place of the run folders it lists.

This module writes the file and reads it back, so its columns have one owner: ``RUN_COLUMN``
here, the metrics' in ``cmfq.training.metrics``, the grid values' in the sweep file.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from cmfq.training.run_folder import RunFolder

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
RUN_COLUMN = "run"
"""A summary's first column: each run's folder, relative to the summary's folder."""


def summary_rows(out: Path, runs: Mapping[str, Mapping[str, str]]) -> list[dict[str, str]]:
    """Per run (its folder name under ``out`` -> its grid values as text): the folder, the
    values, then the last row of its ``metrics.csv`` as written."""
    return [{RUN_COLUMN: name, **values, **RunFolder(out / name).last_metrics()}
            for name, values in runs.items()]


def write_summary(out: Path, runs: Mapping[str, Mapping[str, str]]) -> Path:
    """Write ``SUMMARY_CSV`` and ``SUMMARY_MD`` into ``out`` for the finished ``runs`` (folder
    name -> grid values as text); returns the CSV's path."""
    rows = summary_rows(out, runs)
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


def is_summary(path: str | Path) -> bool:
    """Whether ``path`` is a CSV file whose first column is ``RUN_COLUMN``."""
    path = Path(path)
    if path.suffix != ".csv" or not path.is_file():
        return False
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    return header[:1] == [RUN_COLUMN]


def expand_summaries(paths: Sequence[str], file: str | None = None) -> list[str]:
    """``paths`` with each summary replaced by the folders of its runs (or the ``file`` in each)."""
    expanded = []
    for path in paths:
        if not is_summary(path):
            expanded.append(path)
            continue
        with open(path, newline="") as f:
            folders = [Path(path).parent / row[RUN_COLUMN] for row in csv.DictReader(f)]
        expanded += [str(folder / file if file else folder) for folder in folders]
    return expanded
