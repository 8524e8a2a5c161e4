"""CMFQ: causal mean-field Q-learning. As MFQ, but the neighbour input is the causal mean action

    ǎ_i = Σ_k w_ik e(a_k),   w_ik from c_ik = KL(π(.|s_i, ā_i) ‖ π(.|s_i, e(a_k)))

from ``cmfq.causal_weights`` on the online network's head (the fused op), without gradient: the
agent acts on Q(s, ., ǎ) and ǎ is stored, so the TD target is MFQ's with ǎ' in place of ā':

    y = r + γ (1 - done) Σ_a π(a|s', ǎ') Q_target(s', a, ǎ')

``causal_temperature`` is the τ of the policies compared in c_ik (fixed, so that the weighting
does not drift while exploration anneals). ``weighting`` turns effects into weights:
"proportional" (w = c / Σ c), "softmax" (softmax of c / ``weight_temperature``), or "uniform",
the control: the agent acts on MFQ's plain mean action, exactly as MFQ does, while the effects
are still measured for the diagnostics, so that a comparison with it isolates the weighting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cmfq import causal_weights
from cmfq._C import WEIGHTINGS as OP_WEIGHTINGS
from cmfq.algos.common import QValues, TeamInput
from cmfq.algos.mfq import MFQ
from cmfq.envs import GroupSpec
from cmfq.options import check_bounds, option

WEIGHTINGS = (*OP_WEIGHTINGS, "uniform")
"""cmfq's weightings: the op's, and the uniform control."""


@dataclass
class CMFQOptions:
    """cmfq's options: its fields of a run's config, its keyword arguments here."""

    causal_temperature: float = option(
        0.1, "cmfq: temperature of the policies whose divergence is the causal effect.",
        positive=True)
    weighting: str = option(
        "proportional", "cmfq: how causal effects become weights: proportional (w = c / Σ c), "
        "softmax (of c / weight_temperature), or uniform (the control: MFQ's plain mean action, "
        "effects still measured for the diagnostics).", choices=WEIGHTINGS)
    weight_temperature: float = option(
        1.0, "cmfq, softmax weighting: the temperature of the softmax over the effects, in nats; "
        "far above the effects the weights are near uniform, far below them near the largest "
        "effect's.", positive=True)


class CMFQ(MFQ):
    name = "cmfq"
    options = CMFQOptions

    def __init__(
        self,
        spec: GroupSpec,
        *,
        gamma: float = 0.95,
        td_target: str = "boltzmann",
        causal_temperature: float = CMFQOptions.causal_temperature,
        weighting: str = CMFQOptions.weighting,
        weight_temperature: float = CMFQOptions.weight_temperature,
    ) -> None:
        super().__init__(spec, gamma=gamma, td_target=td_target)
        check_bounds(CMFQOptions(causal_temperature, weighting, weight_temperature))
        self.causal_temperature = causal_temperature
        self.weighting = weighting
        self.weight_temperature = weight_temperature

    def q_values(self, team: TeamInput) -> QValues:
        with torch.no_grad():
            out = causal_weights(
                self.net.head,
                self.net.embed(team.view, team.features),
                team.neighbor_actions,
                temperature=self.causal_temperature,
                # The control measures the effects as the default weighting does.
                weighting="proportional" if self.weighting == "uniform" else self.weighting,
                weight_temperature=self.weight_temperature,
            )
        if self.weighting == "uniform":
            plain = super().q_values(team)
            valid = team.neighbor_actions >= 0
            uniform = valid / valid.sum(1, keepdim=True).clamp(min=1)
            return plain._replace(weights=uniform, effects=out.effects)
        return QValues(out.q_causal, out.causal_mean_action, out.weights, out.effects)
