"""The causal effect (a KL divergence between Boltzmann policies) and the weights built from it.

The KL of two softmax policies with nearly equal logits is a difference of nearly equal numbers if
computed as sum p (log p - log q). With d = (logits_q - logits_p) centred under p (the KL does not
change when d is shifted), KL = F - psi(F + r), F = sum_a p_a phi(d_a), r = sum_a p_a d_a ~ 0,
phi(d) = e^d - 1 - d and psi(m) = m - log1p(m): F is second order in d and psi(F + r) fourth order,
so no cancellation is left. ``csrc/cmfq/shared/agent_math.h`` computes the same formula in C++
and CUDA.
"""

from __future__ import annotations

import torch

from cmfq import _C

#: Below this total effect (nats) the weights fall back to uniform (docs/spec.md, "Weights"); the
#: C++ kernels' constant.
EFFECT_THRESHOLD = _C.EFFECT_THRESHOLD
_PHI_SERIES_BOUND = 0.5
_PSI_SERIES_BOUND = 0.01


def _phi(d: torch.Tensor) -> torch.Tensor:
    """e^d - 1 - d, accurate near 0 (Taylor series d^2/2! + ... + d^17/17! for |d| < 0.5)."""
    series = torch.full_like(d, 1.0)
    for n in range(17, 2, -1):
        series = 1.0 + d * series / n
    series = d * d * series / 2.0
    return torch.where(d.abs() < _PHI_SERIES_BOUND, series, torch.expm1(d) - d)


def _psi(m: torch.Tensor) -> torch.Tensor:
    """m - log1p(m), accurate near 0 (series m^2/2 - m^3/3 + ... for |m| < 0.01)."""
    series = torch.zeros_like(m)
    for n in range(9, 1, -1):
        series = (1.0 / n) - m * series
    series = m * m * series
    return torch.where(m.abs() < _PSI_SERIES_BOUND, series, m - torch.log1p(m))


def kl_from_logits(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(ref_logits) || softmax(logits)) over the last dimension, clamped at 0."""
    p = torch.softmax(ref_logits, dim=-1)
    d = logits - ref_logits
    d = d - (p * d).sum(-1, keepdim=True)
    f = (p * _phi(d)).sum(-1)
    r = (p * d).sum(-1)
    return (f - _psi(f + r)).clamp_min(0.0)


def combine_weights(
    effects: torch.Tensor, mask: torch.Tensor, weighting: str, weight_temperature: float
) -> torch.Tensor:
    """Per-neighbour weights [B, K] from the causal effects (masked effects must be 0)."""
    count = mask.sum(-1, keepdim=True)
    if weighting == "proportional":
        total = effects.sum(-1, keepdim=True)
        measurable = total > EFFECT_THRESHOLD
        # In the effects' dtype: a bool mask over an integer count would give float32, which
        # would promote half-precision weights.
        uniform = mask.to(effects.dtype) / count.clamp_min(1)
        weights = torch.where(measurable, effects / total.clamp_min(EFFECT_THRESHOLD), uniform)
        # An agent whose effects hold a NaN or an infinity gets NaN weights (softmax's own rule),
        # never a uniform fallback that looks valid.
        return torch.where(total.isfinite() | ~mask, weights, float("nan"))
    logits = (effects / weight_temperature).masked_fill(~mask, float("-inf"))
    # A row with no valid neighbour is all -inf: softmax gives NaN there, docs/spec.md wants 0.
    return torch.softmax(logits, dim=-1).masked_fill(count == 0, 0.0)
