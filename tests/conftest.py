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
