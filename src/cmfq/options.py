"""Options as dataclass fields that carry their help text and their bounds, so that the command
line's help and the config's checks read them at run time (no sources needed).

    @dataclass
    class CMFQOptions:
        weighting: str = option("proportional", "How effects become weights.",
                                choices=("proportional", "softmax"))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any


def option(
    default: Any, help: str, *, positive: bool = False, choices: Sequence[str] | None = None,
) -> Any:
    """A dataclass field with ``default``, its ``help`` text, and optionally the rule that its
    value be ``> 0`` (``positive``) or one of ``choices``."""
    metadata = {"help": " ".join(help.split()), "positive": positive, "choices": choices}
    return dataclasses.field(default=default, metadata=metadata)


def help_text(field: dataclasses.Field) -> str:
    """A field's help text ("" for a field not made with ``option``)."""
    return field.metadata.get("help", "")


def check_bounds(options: Any) -> None:
    """Raise ValueError naming the first field of the dataclass ``options`` outside its bounds."""
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        choices = field.metadata.get("choices")
        if field.metadata.get("positive") and not value > 0:
            raise ValueError(f"{field.name} must be > 0, got {value}")
        if choices is not None and value not in choices:
            raise ValueError(f"{field.name} must be one of {tuple(choices)}, got {value!r}")
