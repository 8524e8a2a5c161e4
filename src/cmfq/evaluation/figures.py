"""Figures of the evaluation reports: the tournament's win-rate heatmap and bar charts of scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from cmfq.evaluation.stats import Estimate


def plot_win_rates(
    models: Sequence[str], matrix: Sequence[Sequence[float]], path: Path, title: str = "Win rate",
    ties: Sequence[Sequence[float]] | None = None,
) -> None:
    """Save a heatmap whose cell (row i, column j) is the share of games model i won against
    model j; cells without games (the diagonal) are left grey. ``ties`` (the same layout) adds
    the share of tied games under each rate, since a low win rate may be a draw, not a defeat."""
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
                text = f"{value:.2f}"
                if ties is not None and ties[i][j] > 0:
                    text += f"\nties {ties[i][j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", color=colour)
    ax.set_xticks(range(len(models)), models, rotation=45, ha="right")
    ax.set_yticks(range(len(models)), models)
    ax.set_xlabel("opponent")
    ax.set_ylabel("model")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="games won / games played")
    fig.savefig(path, dpi=120)


def plot_scores(
    models: Sequence[str], panels: dict[str, Sequence[Estimate]], path: Path, title: str = "",
) -> None:
    """Save one bar chart per panel (e.g. reward, deer caught): a bar per model at its mean, with
    the bounds of its interval as error bars (none where the interval is unknown)."""
    fig = Figure(figsize=(1.5 + 4.0 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    x = np.arange(len(models))
    for ax, (name, estimates) in zip(axes, panels.items(), strict=True):
        if len(estimates) != len(models):
            raise ValueError(f"panel {name!r} has {len(estimates)} values for {len(models)} models")
        means = np.array([e.value for e in estimates])
        errors = np.nan_to_num(
            np.array([[e.value - e.low, e.high - e.value] for e in estimates]).T, nan=0.0
        )
        ax.bar(x, means, yerr=errors, capsize=4, color=[f"C{i % 10}" for i in x])
        ax.set_xticks(x, models, rotation=30, ha="right")
        ax.set_title(name)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
