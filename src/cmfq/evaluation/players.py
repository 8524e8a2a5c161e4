"""What a command line may name as a player: a checkpoint file, ``pretrained:NAME`` (a shipped
model) or ``random`` (a team acting uniformly at random, the floor of every report); the players'
labels and the groups (algorithms) they belong to."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from cmfq.pretrained import PREFIX as PRETRAINED_PREFIX
from cmfq.pretrained import resolve
from cmfq.training.run_folder import LAST_FILE

RANDOM = "random"
"""The uniformly random team. A checkpoint file named ``random`` is given as ``./random``."""


def is_named(reference: str | Path) -> bool:
    """True for ``random`` and ``pretrained:NAME``: players named by a word, not by a path."""
    return isinstance(reference, str) and (
        reference == RANDOM or reference.startswith(PRETRAINED_PREFIX)
    )


def labels_for(references: Sequence[str | Path]) -> list[str]:
    """Short names of players: ``random`` and ``pretrained:NAME`` as given; for a checkpoint the
    run folder for ``<run>/last.pt``, else ``<run>/<file stem>``; the whole path (less ``.pt``)
    where those would clash."""
    def short(ref) -> str:
        if is_named(ref):
            return ref
        p = Path(ref)
        return p.parent.name if p.name == LAST_FILE else f"{p.parent.name}/{p.stem}"

    def whole(ref) -> str:
        return ref if is_named(ref) else str(Path(ref).with_suffix(""))

    labels = [short(r) for r in references]
    if len(set(labels)) < len(labels):
        labels = [whole(r) for r in references]
    return labels


def unique_labels(references: Sequence[str | Path]) -> list[str]:
    """``labels_for``, refusing a player given twice (its results would be merged)."""
    labels = labels_for(references)
    if len(set(labels)) < len(labels):
        raise ValueError("a checkpoint is given twice; give each one once")
    return labels


def digest(reference: str | Path) -> str | None:
    """The SHA-256 of a player's checkpoint file (of the shipped model for ``pretrained:NAME``),
    which tells whether a file changed under the same name (a few ms for a 3 MB checkpoint);
    None for ``random``, which has no file."""
    if reference == RANDOM:
        return None
    return hashlib.sha256(Path(resolve(reference)).read_bytes()).hexdigest()


def checkpoint_groups(
    paths: Sequence[str | Path], labels: Sequence[str], group_by: str = "algo",
) -> dict[str, str]:
    """Label -> group: the values of the comma-separated ``TrainConfig`` fields ``group_by``
    in each checkpoint's own config, joined by '-' (``random`` is its own group)."""
    from cmfq.training.checkpoint import load_checkpoint  # torch: only when groups are asked for

    keys = [key.strip() for key in group_by.split(",") if key.strip()]
    groups = {}
    for label, path in zip(labels, paths, strict=True):
        if path == RANDOM:
            groups[label] = RANDOM
            continue
        config = load_checkpoint(path).config.to_dict()
        unknown = [key for key in keys if key not in config]
        if unknown or not keys:
            raise ValueError(f"group_by: no config fields {unknown or keys}; fields: "
                             f"{sorted(config)}")
        groups[label] = "-".join(str(config[key]) for key in keys)
    return groups


def training_seeds(paths: Sequence[str | Path], labels: Sequence[str]) -> dict[str, int]:
    """Label -> the training seed in each checkpoint's own config (``random`` has none)."""
    from cmfq.training.checkpoint import load_checkpoint  # torch: only when seeds are asked for

    return {label: load_checkpoint(path).config.seed
            for label, path in zip(labels, paths, strict=True) if path != RANDOM}
