"""Per-round metrics, written to a CSV and to TensorBoard event files in the run folder."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

from torch.utils.tensorboard import SummaryWriter

from cmfq.algos.diagnostics import DIAGNOSTICS, SENSITIVITY

if TYPE_CHECKING:
    from cmfq.training.run_folder import RunFolder

COLUMNS = (
    "round", "side", "steps", "temperature", "reward", "kills", "deaths", "survivors",
    "opponent_survivors", "win", "loss", "updates", "buffer", "steps_per_s", *DIAGNOSTICS,
    *SENSITIVITY,
)
"""The CSV columns; every column but ``round`` is also a TensorBoard scalar ``train/<column>``
(but where NaN: e.g. the weight diagnostics of an algorithm without weights, see
``cmfq.algos.diagnostics``). The neighbour sensitivity and its floor (``SENSITIVITY``) are
logged for every algorithm."""


class MetricsLog:
    """Appends one row per round to ``metrics.csv`` and the same scalars to TensorBoard.

    On resume the CSV is cut back to the rounds before ``start_round``, so a run interrupted after
    its last checkpoint has no duplicate rows; a column its old rows lack is NaN there.
    """

    def __init__(self, folder: RunFolder, start_round: int = 0) -> None:
        self.path = folder.metrics_file
        kept: list[dict] = []
        if start_round > 0 and self.path.exists():
            with open(self.path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["round"]) < start_round]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS, restval="nan")
            writer.writeheader()
            writer.writerows(kept)
        self.tensorboard = SummaryWriter(str(folder.tensorboard_dir), purge_step=start_round)

    def log(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)
        for name in COLUMNS[1:]:
            if not math.isnan(row[name]):
                self.tensorboard.add_scalar(f"train/{name}", row[name], row["round"])
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv`` as numbers."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
