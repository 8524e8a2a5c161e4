"""What the neighbour weights looked like: the diagnostics logged with every training round.

Averaged over the agents (of all steps) with at least two neighbours, since with one the weight
is 1 and the effect 0 whatever the network:

- ``effect_sum``: Σ_k c_ik, the summed causal effect in nats (cmfq);
- ``weight_entropy``: H(w_i) / log K_i, the entropy of the weights over that of uniform ones
  (1 = uniform; cmfq's causal weights, amfq's attention);
- ``mean_shift``: |ǎ_i - ā_i|_1, how far the weighted neighbour input moved from the plain mean
  action (0 to 2);
- ``uniform_fallback``: the share of agents whose summed effect is at most
  ``cmfq._C.EFFECT_THRESHOLD``, where proportional weights fall back to uniform (cmfq;
  counted under any weighting, so that variants compare).

An algorithm without weights (il, mfq) or effects (amfq) has NaN for what it lacks. Reading the
op's outputs draws no random numbers and changes nothing the agents act on.
"""

from __future__ import annotations

import math

import torch

from cmfq._C import EFFECT_THRESHOLD
from cmfq.algos.common import QValues, mean_action

DIAGNOSTICS = ("effect_sum", "weight_entropy", "mean_shift", "uniform_fallback")
"""The diagnostics' names, as logged."""


class WeightDiagnostics:
    """Running sums of the diagnostics over the decisions ``add``-ed; ``means()`` averages them.

    The sums stay tensors on the network's device, so adding never waits for a GPU.
    """

    def __init__(self) -> None:
        self._sums: torch.Tensor | None = None
        self._agents: torch.Tensor | None = None

    def add(self, values: QValues, neighbor_actions: torch.Tensor) -> None:
        """Add one decision: ``values`` from ``Algorithm.q_values`` for neighbours acting
        ``neighbor_actions`` (int [n, K], -1 = masked)."""
        if values.weights is None:
            return
        # Masks rather than boolean indexing, which would make a GPU wait every step.
        count = (neighbor_actions >= 0).sum(1)
        counted = count >= 2
        weights = values.weights.double()
        entropy = -torch.special.xlogy(weights, weights).sum(1) / count.clamp(min=2).double().log()
        plain = mean_action(neighbor_actions, values.neighbor_input.shape[1])
        shift = (values.neighbor_input.double() - plain.double()).abs().sum(1)
        if values.effects is None:  # NaN, which every sum with a counted agent keeps
            effect_sum = fallback = torch.full_like(shift, math.nan)
        else:
            effect_sum = values.effects.double().sum(1)
            fallback = (effect_sum <= EFFECT_THRESHOLD).double()
        per_agent = torch.stack([effect_sum, entropy, shift, fallback])
        sums = torch.where(counted, per_agent, 0.0).sum(1)
        agents = counted.sum()
        if self._sums is None:
            self._sums, self._agents = sums, agents
        else:
            self._sums, self._agents = self._sums + sums, self._agents + agents

    def means(self) -> dict[str, float]:
        """Each diagnostic's mean over the agents added; NaN where none (or not measured)."""
        if self._sums is None or int(self._agents) == 0:
            return dict.fromkeys(DIAGNOSTICS, math.nan)
        means = (self._sums / self._agents).tolist()
        return dict(zip(DIAGNOSTICS, means, strict=True))
