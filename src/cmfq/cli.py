"""The ``cmfq`` command line: ``train``, ``sweep``, ``tournament``, ``render`` and ``plot``."""

from __future__ import annotations

import argparse
import importlib

import torch

import cmfq

# Each module adds its subcommands with ``register(subparsers)``; a subcommand's parser sets
# ``func`` (args -> exit code).
_COMMAND_MODULES = ("cmfq.training.cli", "cmfq.sweep.cli", "cmfq.evaluation.cli")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cmfq", description="Train, sweep, play tournaments, render games and plot curves "
        "of causal mean-field multi-agent RL.")
    parser.add_argument("--version", action="version", version=version())
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    args = parser.parse_args(argv)
    return args.func(args) or 0


def version() -> str:
    """What ``cmfq --version`` prints: cmfq's version, the torch it runs on and its build."""
    build = "with CUDA" if cmfq.cuda_built() else "for the CPU only"
    return f"cmfq {cmfq.__version__} (torch {torch.__version__}, built {build})"


if __name__ == "__main__":
    raise SystemExit(main())
