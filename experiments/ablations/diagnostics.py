"""The ablation pilots' training diagnostics, per variant: means over the last rounds of each run,
then over its seeds.

    python experiments/ablations/diagnostics.py runs/ablations --last 10 \
        > experiments/ablations/diagnostics.md

A variant is a run's config without its seed and folder; the table names each by the fields in
which the variants differ.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from cmfq.training.config import TrainConfig
from cmfq.training.metrics import read_metrics

COLUMNS = ("effect_sum", "weight_entropy", "mean_shift", "uniform_fallback", "kills", "loss")


def _mean(values: list[float]) -> float:
    """The mean of the values that are not NaN; NaN if none is (the metric was not measured)."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder searched for run folders (metrics.csv)")
    parser.add_argument("--last", type=int, default=10, help="rounds averaged at each run's end")
    args = parser.parse_args()

    variants: dict[tuple, list[dict[str, float]]] = {}
    for metrics in sorted(args.root.rglob("metrics.csv")):
        config = TrainConfig.from_toml(metrics.parent / "config.toml").to_dict()
        rows = read_metrics(metrics)[-args.last:]
        key = tuple(sorted((k, v) for k, v in config.items() if k not in ("seed", "out")))
        means = {c: _mean([r[c] for r in rows]) for c in COLUMNS}
        variants.setdefault(key, []).append(means | {"rounds": rows[-1]["round"] + 1})

    differing = sorted({k for key in variants for k, v in key
                        if len({dict(other)[k] for other in variants}) > 1})
    print(f"Means over each run's last {args.last} rounds, then over its seeds (NaN: not "
          "measured for that algorithm).\n")
    print("| " + " | ".join([*differing, "seeds", "rounds", *COLUMNS]) + " |")
    print("|" + "---|" * len(differing) + "---:|" * (2 + len(COLUMNS)))
    for key, runs in variants.items():
        config = dict(key)
        cells = [str(config[k]) for k in differing]
        cells += [str(len(runs)), f"{min(r['rounds'] for r in runs):.0f}"]
        cells += [f"{np.mean([r[c] for r in runs]):.3g}" for c in COLUMNS]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
