"""Trained models shipped with the package: one per algorithm and env, e.g. ``cmfq-battle``.

Wherever a checkpoint path is accepted (``load_checkpoint``, ``cmfq tournament``, ``cmfq render``,
``cmfq train --opponent``), ``pretrained:NAME`` names one of these models::

    from cmfq import pretrained
    pretrained.names()                  # ['amfq-tiger-deer', 'cmfq-battle', ...]
    pretrained.path("cmfq-battle")      # .../cmfq/pretrained/models/cmfq-battle.pt

How the models were trained and picked is told in docs/results.md. This module uses only the
standard library, so that the training code can resolve names without a cycle.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).parent / "models"
"""Where the models lie, one ``NAME.pt`` checkpoint each (package data)."""
PREFIX = "pretrained:"
"""What marks a model name where a checkpoint path is expected."""


def names(models_dir: str | Path | None = None) -> list[str]:
    """The names of the models in ``models_dir`` (default ``MODELS_DIR``), sorted."""
    folder = Path(MODELS_DIR if models_dir is None else models_dir)
    return sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []


def path(name: str, models_dir: str | Path | None = None) -> Path:
    """The checkpoint file of model ``name``; ValueError listing the names for an unknown one."""
    folder = Path(MODELS_DIR if models_dir is None else models_dir)
    available = names(folder)
    if name not in available:
        listing = ", ".join(available) if available else f"none are installed in {folder}"
        raise ValueError(f"unknown pretrained model {name!r}; available: {listing}")
    return folder / f"{name}.pt"


def resolve(reference: str | Path) -> str | Path:
    """``pretrained:NAME`` -> the model's path; any other reference is returned unchanged."""
    if isinstance(reference, str) and reference.startswith(PREFIX):
        return path(reference[len(PREFIX):])
    return reference
