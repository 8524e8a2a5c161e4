"""The tournament's win-rate heatmap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure


def plot_win_rates(
    models: Sequence[str], matrix: Sequence[Sequence[float]], path: Path, title: str = "Win rate",
) -> None:
    """Save a heatmap whose cell (row i, column j) is the share of rounds model i won against
    model j; cells without games (the diagonal) are left grey."""
    values = np.asarray(matrix, dtype=float)
    if values.shape != (len(models), len(models)):
        raise ValueError(f"matrix must be {len(models)}x{len(models)}, got {values.shape}")
    # A pyplot-free Figure keeps this safe in worker processes and headless machines.
    size = 2.0 + 0.9 * len(models)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["RdBu"].with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if not math.isnan(value):
                colour = "white" if abs(value - 0.5) > 0.3 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=colour)
    ax.set_xticks(range(len(models)), models, rotation=45, ha="right")
    ax.set_yticks(range(len(models)), models)
    ax.set_xlabel("opponent")
    ax.set_ylabel("model")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="rounds won / rounds played")
    fig.savefig(path, dpi=120)
