"""The ``cmfq`` command line: ``train``, ``sweep``, ``tournament``, ``render`` and ``plot``."""

from __future__ import annotations

import argparse
import importlib

# Each module adds its subcommands with ``register(subparsers)``; a subcommand's parser sets
# ``func`` (args -> exit code).
_COMMAND_MODULES = ("cmfq.training.cli", "cmfq.sweep.cli", "cmfq.evaluation.cli")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmfq", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
