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


# The fused op's formulations and the environment that selects each.
FORMULATIONS = {
    "kernel": {"CMFQ_STACKED": "0", "CMFQ_FUSED_TRUNK": "0"},
    "stacked": {"CMFQ_STACKED": "1", "CMFQ_FUSED_TRUNK": "0"},
    "fused-trunk": {"CMFQ_STACKED": "1", "CMFQ_FUSED_TRUNK": "1"},
}


@pytest.fixture(params=list(FORMULATIONS))
def formulation(request, monkeypatch) -> str:
    """How the fused op evaluates the head: the per-agent kernels; every agent's intervention
    rows stacked into GEMMs (``CMFQ_STACKED=1``); or those rows through the trunk in one CUDA
    launch (``CMFQ_FUSED_TRUNK=1``, float32 heads that fit it; the CPU ignores it). The backward
    follows the forward."""
    on_cpu = "device" in request.fixturenames and request.getfixturevalue("device") == "cpu"
    if request.param == "fused-trunk" and on_cpu:
        pytest.skip("the fused trunk is CUDA's; on the CPU it is the stacked formulation")
    for name, value in FORMULATIONS[request.param].items():
        monkeypatch.setenv(name, value)
    return request.param
