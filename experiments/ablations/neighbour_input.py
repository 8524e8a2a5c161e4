"""The neighbour-input pilots' table: per design, the sensitivity of the trained network's policy
to its neighbour input (KL between pi(.|s, x) and pi(.|s, uniform)) against the same measure of
its initial network on the same states (the floor), the same ratio for another agent's input in
place of the uniform one (swap), with the reward and kills, as means over the last rounds of each
run; and the ratio every ten rounds.

    python experiments/ablations/neighbour_input.py experiments/ablations/neighbour-input --last 10
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

DESIGNS = ("published", "counts", "direct", "wide")


def read(run: Path) -> list[dict[str, float]]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def mean(rows: list[dict[str, float]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder with one run folder per design")
    parser.add_argument("--last", type=int, default=10, help="rounds averaged at the end")
    args = parser.parse_args()
    runs = {d: read(args.folder / d) for d in DESIGNS
            if (args.folder / d / "metrics.csv").is_file()}
    print(f"Means over each run's last {args.last} rounds (ratio = sensitivity / floor of those "
          "means).\n")
    print("| design | rounds | sensitivity | floor | ratio | swap ratio | max ratio (round) | "
          "reward | kills |")
    print("|---|---|---|---|---|---|---|---|---|")
    for design, rows in runs.items():
        tail = rows[-args.last:]
        sens, floor = mean(tail, "sensitivity"), mean(tail, "sensitivity_floor")
        best = max(rows, key=lambda r: r["sensitivity"] / r["sensitivity_floor"])
        swap = mean(tail, "sensitivity_swap") / mean(tail, "sensitivity_swap_floor")
        print(f"| {design} | {len(rows)} | {sens:.2e} | {floor:.2e} | {sens / floor:.2f} | "
              f"{swap:.2f} | "
              f"{best['sensitivity'] / best['sensitivity_floor']:.2f} ({int(best['round'])}) | "
              f"{mean(tail, 'reward'):.2f} | {mean(tail, 'kills'):.2f} |")
    print("\nThe ratio, means of sensitivity and floor over rounds r-9 .. r:\n")
    ends = range(10, max(len(rows) for rows in runs.values()) + 1, 10)
    print("| design | " + " | ".join(f"r={e - 1}" for e in ends) + " |")
    print("|---|" + "---|" * len(ends))
    for design, rows in runs.items():
        window = [rows[e - 10:e] for e in ends]
        cells = [f"{mean(w, 'sensitivity') / mean(w, 'sensitivity_floor'):.2f}" if len(w) == 10
                 else "" for w in window]
        print(f"| {design} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
