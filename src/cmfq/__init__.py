"""cmfq: causal mean-field multi-agent reinforcement learning.

``causal_weights`` weights each neighbour of an agent by its causal effect on the agent's policy
(docs/spec.md); ``MeanFieldHead`` is the Q-network head that its fused C++/CUDA kernels evaluate.
"""

import torch  # noqa: F401  (first: the extension links against its libraries)

from cmfq._C import cpu_capabilities, cpu_capability, cuda_built
from cmfq.op import CausalWeights, MeanFieldHead, causal_weights, which_formulation

__version__ = "0.1.0"

__all__ = [
    "CausalWeights",
    "MeanFieldHead",
    "causal_weights",
    "cpu_capabilities",
    "cpu_capability",
    "cuda_built",
    "which_formulation",
    "__version__",
]
