import pytest
import torch

import cmfq

CUDA_SKIP_REASON = (
    "no CUDA device" if not torch.cuda.is_available() else "cmfq was built without CUDA"
)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not (torch.cuda.is_available() and cmfq.cuda_built()), reason=CUDA_SKIP_REASON
        ),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(params=["kernel", "stacked"])
def formulation(request, monkeypatch) -> str:
    """How the fused op evaluates the head: the per-agent kernels, or every agent's intervention
    rows stacked into GEMMs (``CMFQ_STACKED=1``); the backward follows the forward."""
    monkeypatch.setenv("CMFQ_STACKED", "1" if request.param == "stacked" else "0")
    return request.param
