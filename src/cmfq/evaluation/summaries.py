"""Sweep summaries as input: ``cmfq plot`` and ``cmfq tournament`` take a sweep's summary CSV in
place of the run folders it lists."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

RUN_COLUMN = "run"
"""A summary's first column: each run's folder, relative to the summary's folder."""


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
