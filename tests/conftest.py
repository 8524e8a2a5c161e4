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


@pytest.fixture(params=cmfq._C.FORMULATIONS)
def formulation(request) -> str:
    """How the fused op evaluates the head, the ``formulation=`` of ``cmfq.causal_weights``: the
    per-agent kernels; every agent's intervention rows stacked into GEMMs; or those rows through
    the trunk in one CUDA launch (float32 heads that fit it; CUDA only). The backward follows the
    forward."""
    on_cpu = "device" not in request.fixturenames or request.getfixturevalue("device") == "cpu"
    if request.param == "fused_trunk" and on_cpu:
        pytest.skip("the fused trunk runs on CUDA only")
    return request.param
