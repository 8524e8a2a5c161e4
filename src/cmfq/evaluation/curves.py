"""Learning curves from the CSV logs of training runs: one line per group of runs (an algorithm
trained with several seeds), their mean with a band across runs: the 95% t interval of the mean
(default) or ± one standard deviation."""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cmfq.evaluation.stats import t_quantile_975
from cmfq.training.run_folder import RunFolder

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# ``win`` is 1 for a round won against the training opponent: its moving average is the win rate.
DEFAULT_METRICS = ("reward", "kills", "win", "sensitivity")
TITLES = {"reward": "reward per agent", "win": "win rate vs training opponent",
          "sensitivity": "neighbour sensitivity (nats)"}
# A metric logged with a ``<metric>_floor`` column (the neighbour sensitivity and the level of the
# run's initial network) has its floor drawn dashed in its group's colour, on a log scale: the two
# lie orders of magnitude apart.
FLOOR_SUFFIX = "_floor"
# Column names tried, in order, for the x axis; the row number is used when none is present.
X_COLUMNS = ("round", "episode", "iteration", "step")
# The bands around a group's mean: "ci", mean ± t·s/√n (the 95% interval of the mean over the
# runs, Student's t with n − 1 degrees of freedom); "std", mean ± s (how far single runs stray).
BANDS = ("ci", "std")


@dataclass
class Run:
    """A run's log as columns of floats, with the name of the group it is averaged in."""

    name: str
    group: str
    columns: dict[str, np.ndarray]

    @property
    def x_name(self) -> str:
        return next((c for c in X_COLUMNS if c in self.columns), "row")

    @property
    def x(self) -> np.ndarray:
        if self.x_name in self.columns:
            return self.columns[self.x_name]
        return np.arange(len(next(iter(self.columns.values()), ())), dtype=float)


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """A CSV file's numeric columns; cells that are empty or not numbers become NaN."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return {
        name: np.array([_to_float(row.get(name) or "") for row in rows])
        for name in rows[0]
        if name is not None
    }


def run_group(run_dir: Path, group_by: str) -> str:
    """The group a run is averaged in: the values of the comma-separated config keys
    ``group_by`` (``algo`` by default; ``algo,map_size`` splits further) in its saved config;
    ``group_by="run"``, or a folder without a saved config, keeps each run apart."""
    config_path = RunFolder(run_dir).config_file
    if group_by != "run" and config_path.is_file():
        with open(config_path, "rb") as f:
            config = tomllib.load(f)
        keys = [key.strip() for key in group_by.split(",")]
        unknown = [key for key in keys if key not in config]
        if unknown:
            raise ValueError(f"{config_path} has no {unknown}; keys: {sorted(config)}")
        return "-".join(str(config[key]) for key in keys)
    return run_dir.name


def load_runs(paths: Sequence[Path], group_by: str = "algo") -> list[Run]:
    """Load the logs of the given run folders (or CSV files)."""
    runs = []
    for path in map(Path, paths):
        if path.is_dir():
            csv_path, run_dir = RunFolder(path).metrics_file, path
        else:
            csv_path, run_dir = path, path.parent
        if not csv_path.is_file():
            raise FileNotFoundError(f"no training log {csv_path}")
        runs.append(Run(run_dir.name, run_group(run_dir, group_by), read_columns(csv_path)))
    if not runs:
        raise ValueError("no runs given")
    return runs


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (fewer at the start), ignoring NaN."""
    if window < 1:
        raise ValueError(f"smoothing window must be at least 1, got {window}")
    valid = ~np.isnan(values)
    sums = np.cumsum(np.where(valid, values, 0.0))
    counts = np.cumsum(valid)
    sums[window:] = sums[window:] - sums[:-window]
    counts[window:] = counts[window:] - counts[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def group_curve(runs: Sequence[Run], metric: str, window: int, band: str = "ci"):
    """Mean across ``runs`` of the smoothed ``metric`` over the x values that all runs reached,
    and the half-width of its band (``BANDS``), NaN with a single run."""
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    length = min(len(run.x) for run in runs)
    curves = np.stack([smooth(run.columns[metric][:length], window) for run in runs])
    # Rows that no run logged (a metric evaluated every few rounds) stay NaN, without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(curves, axis=0)
        spread = np.nanstd(curves, axis=0, ddof=1) if len(runs) > 1 else np.full(length, np.nan)
        if band == "ci" and len(runs) > 1:
            # Rows that some runs did not log have fewer values, hence a wider interval.
            n = np.sum(~np.isnan(curves), axis=0)
            factor = np.array([t_quantile_975(k - 1) if k > 1 else np.nan for k in n])
            spread = factor * spread / np.sqrt(n)
    return runs[0].x[:length], mean, spread


def band_edges(
    runs: Sequence[Run], metric: str, mean: np.ndarray, spread: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The band mean ± spread, kept within the range of the values the runs logged: their mean
    never leaves it, and where an interval does (the t interval of two runs' 0/1 wins) it
    claims values that cannot occur."""
    values = np.concatenate([run.columns[metric] for run in runs])
    low, high = np.nanmin(values), np.nanmax(values)
    return np.clip(mean - spread, low, high), np.clip(mean + spread, low, high)


def plot_curves(
    runs: Sequence[Run], path: Path, metrics: Sequence[str] = DEFAULT_METRICS, window: int = 10,
    band: str = "ci",
) -> list[str]:
    """Save one panel per metric that some run logged, each group's mean with its ``band`` (and
    its floor, dashed, where the runs log one: ``FLOOR_SUFFIX``); returns the metrics plotted."""
    present = [m for m in metrics if any(m in run.columns for run in runs)]
    if not present:
        available = sorted({c for run in runs for c in run.columns})
        raise ValueError(f"none of the metrics {list(metrics)} is logged; columns: {available}")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)

    fig = Figure(figsize=(5.0 * len(present), 3.8), layout="constrained")
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, metric in zip(axes, present, strict=True):
        for colour_index, (group, members) in enumerate(groups.items()):
            # A column an algorithm logs as NaN throughout (cmfq's diagnostics in an mfq run).
            logged = [run for run in members
                      if metric in run.columns and not np.isnan(run.columns[metric]).all()]
            if not logged:
                continue
            x, mean, spread = group_curve(logged, metric, window, band)
            keep = np.isfinite(mean)
            x, mean, spread = x[keep], mean[keep], spread[keep]
            colour = f"C{colour_index % 10}"
            label = group if len(logged) == 1 else f"{group} (n={len(logged)})"
            ax.plot(x, mean, color=colour, label=label)
            if len(logged) > 1:
                ax.fill_between(x, *band_edges(logged, metric, mean, spread), color=colour,
                                alpha=0.2)
            floor = metric + FLOOR_SUFFIX
            if all(floor in run.columns for run in logged):
                x, mean, _ = group_curve(logged, floor, window, band)
                keep = np.isfinite(mean)
                ax.plot(x[keep], mean[keep], color=colour, linestyle="--", linewidth=1)
                ax.set_yscale("log")
        ax.set_xlabel(runs[0].x_name)
        ax.set_title(TITLES.get(metric, metric.replace("_", " ")))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small", title="band: 95% CI of the mean" if band == "ci"
                   else "band: ± 1 std", title_fontsize="small")
    fig.savefig(path, dpi=120)
    return present
