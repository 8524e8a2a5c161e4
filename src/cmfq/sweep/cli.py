"""``cmfq sweep``: train every combination of a grid of configs on Ray."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``sweep`` subcommand to the top-level ``cmfq`` parser."""
    parser = subparsers.add_parser(
        "sweep",
        help="train a grid of configs as Ray tasks, here or on a cluster",
        description="Train every combination of the sweep file's [grid] over its [base] config, "
        "one Ray task per run with the [resources] it asks, each in its own folder under --out. "
        "Start it again after any interruption: finished runs are skipped, the others resume. "
        "Writes summary.csv and summary.md into --out. The file format: docs/sweeps.md.",
    )
    parser.add_argument("config", help="sweep file (TOML with [base], [grid], [resources])")
    parser.add_argument("--out", default=None,
                        help="folder of the runs (default: runs/<sweep file name>)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (HOST:PORT or 'auto'; default: Ray's, a new "
                        "local instance when no cluster is running here)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_sweep_command)


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run ``cmfq sweep``; returns the exit code (1 when some run failed)."""
    from cmfq.sweep.runner import run_sweep
    from cmfq.sweep.spec import SweepSpec

    out = args.out or str(Path("runs") / Path(args.config).stem)
    try:
        result = run_sweep(SweepSpec.from_toml(args.config), out, address=args.address,
                           progress=not args.quiet)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"cmfq sweep: error: {err}", file=sys.stderr)
        return 2
    for name, error in result.failed.items():
        print(f"cmfq sweep: run {name} failed: {error}", file=sys.stderr)
    print(f"{len(result.finished)} runs finished ({len(result.trained)} trained now); "
          f"summary in {result.summary} and {result.summary.with_suffix('.md')}")
    return 1 if result.failed else 0
