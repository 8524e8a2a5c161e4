"""CMFQ: causal mean-field Q-learning. As MFQ, but the neighbour input is the causal mean action

    ǎ_i = Σ_k w_ik e(a_k),   w_ik ∝ c_ik = KL(π(.|s_i, ā_i) ‖ π(.|s_i, e(a_k)))

from ``cmfq.causal_weights`` on the online network's head (the fused op), without gradient: the
agent acts on Q(s, ., ǎ) and ǎ is stored, so the TD target is MFQ's with ǎ' in place of ā':

    y = r + γ (1 - done) Σ_a π(a|s', ǎ') Q_target(s', a, ǎ')

``causal_temperature`` is the τ of the policies compared in c_ik (fixed, so that the weighting
does not drift while exploration anneals); ``weighting`` is "proportional" or "softmax".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cmfq.algos.common import TeamInput
from cmfq.algos.mfq import MFQ
from cmfq.causal import causal_weights
from cmfq.envs import GroupSpec
from cmfq.options import option


@dataclass
class CMFQOptions:
    """cmfq's options: its fields of a run's config, its keyword arguments here."""

    causal_temperature: float = option(
        0.1, "cmfq: temperature of the policies whose divergence is the causal effect.",
        positive=True)
    weighting: str = option(
        "proportional", "cmfq: how causal effects become weights, proportional or softmax.",
        choices=("proportional", "softmax"))


class CMFQ(MFQ):
    name = "cmfq"
    options = CMFQOptions

    def __init__(
        self,
        spec: GroupSpec,
        *,
        gamma: float = 0.95,
        td_target: str = "boltzmann",
        causal_temperature: float = 0.1,
        weighting: str = "proportional",
    ) -> None:
        super().__init__(spec, gamma=gamma, td_target=td_target)
        self.causal_temperature = causal_temperature
        self.weighting = weighting

    def q_values(self, team: TeamInput) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = causal_weights(
                self.net.head,
                self.net.embed(team.view, team.features),
                team.neighbor_actions,
                temperature=self.causal_temperature,
                weighting=self.weighting,
            )
        return out.q_causal, out.causal_mean_action
