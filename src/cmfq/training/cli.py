"""``cmfq train``: train one algorithm, from flags, a TOML config, or a run folder to resume."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing

from cmfq.options import help_text
from cmfq.training.config import RENAMED, TrainConfig


def register(subparsers) -> None:
    """Add the ``train`` subcommand to the top-level ``cmfq`` parser."""
    parser = subparsers.add_parser(
        "train",
        help="train il, mfq, amfq or cmfq on battle or tiger-deer",
        description="Train one algorithm. Values come from the defaults, then --config, then "
        "the flags given. --resume DIR continues the run in DIR exactly where it stopped.",
    )
    parser.add_argument("--config", help="TOML file of config fields (see docs/training.md)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in this folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = _scalar_type(hints[f.name])
        text = f"{help_text(f)} (default: {f.default})".replace("%", "%%")
        if kind is bool:
            parser.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=text)
        else:
            parser.add_argument(_flag(f.name), dest=f.name, type=kind, default=None, help=text)
    for old, new in RENAMED.items():  # still taken, not shown; TrainConfig says they are old
        parser.add_argument(_flag(old), dest=old, type=_scalar_type(hints[new]), default=None,
                            help=argparse.SUPPRESS)
    parser.set_defaults(func=run_train)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(hint) -> type:
    """``int | None`` -> int, so the flag parses the value's type."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def run_train(args: argparse.Namespace) -> int:
    """Run ``cmfq train``; returns the exit code."""
    # the heavy imports only when training
    from cmfq.training.run_folder import RunFolder
    from cmfq.training.trainer import resume, train

    names = [f.name for f in dataclasses.fields(TrainConfig)] + list(RENAMED)
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    try:
        if args.resume:
            extra = sorted(set(given) - {"rounds"})
            if extra or args.config:
                raise ValueError(
                    "--resume continues a run with its saved config; only --rounds may change "
                    f"(got {[_flag(n) for n in extra] or ['--config']})"
                )
            folder = RunFolder(args.resume)
            if folder.is_finished(given.get("rounds")):
                done = folder.rounds_logged()
                print(f"{folder.path} is finished: {done} rounds trained, nothing to do (--rounds "
                      f"N with N above {done} trains it further)")
                return 0
            run_dir = resume(args.resume, rounds=given.get("rounds"), progress=not args.quiet)
        else:
            values = TrainConfig.from_toml(args.config).to_dict() if args.config else {}
            values.update(given)
            run_dir = train(TrainConfig.from_dict(values), progress=not args.quiet)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"cmfq train: error: {err}", file=sys.stderr)
        return 2
    print(f"run saved in {run_dir}")
    return 0
