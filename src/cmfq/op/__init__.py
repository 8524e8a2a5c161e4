"""The op: ``causal_weights`` (the entry point), ``MeanFieldHead`` (the head its fused kernels
evaluate), their registration with torch, and the generic PyTorch path.

    entry.py         the public function: argument checks, then the fused op or the generic path
    head.py          MeanFieldHead
    registration.py  the fake and autograd registrations of torch.ops.cmfq.causal_weights
    gradient.py      the op's backward in PyTorch ops (where no backward kernel runs)
    generic.py       the generic batched-PyTorch path, any Q-function; the tests' reference
    divergence.py    the causal effect (a well-conditioned KL) and the weights made from it

The compiled kernels are ``cmfq._C`` (``csrc/cmfq/``), which owns the constants both sides use
(``EFFECT_THRESHOLD``, ``WEIGHTINGS``, ``FORMULATIONS``), the one check of the scalar arguments
and the choice of the formulation.
"""

from cmfq.op import registration  # noqa: F401  (registers the op's fake and autograd)
from cmfq.op.entry import CausalWeights, causal_weights, which_formulation
from cmfq.op.head import MeanFieldHead

__all__ = ["CausalWeights", "MeanFieldHead", "causal_weights", "which_formulation"]
