"""The ``device`` setting: auto, cpu, cuda or cuda:N, resolved against what this machine has."""

from __future__ import annotations

import torch

import cmfq


def check_device_name(name: str) -> None:
    """Raise ValueError unless ``name`` is auto, cpu, cuda or cuda:N."""
    kind, colon, index = name.partition(":")
    if name in ("auto", "cpu", "cuda") or (kind == "cuda" and colon and index.isdigit()):
        return
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")


def resolve_device(name: str) -> torch.device:
    """The torch device of a ``device`` setting.

    auto: the current CUDA device when torch sees one and cmfq's fused op was built with CUDA
    (else CMFQ could not act through its kernel), otherwise the CPU. An explicit CUDA device that
    this machine lacks is a ValueError, not a silent fall-back.
    """
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and cmfq.cuda_built() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: torch sees no CUDA device on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device
