"""CMFQ: causal mean-field Q-learning. As MFQ, but the neighbour input is the causal mean action

    ǎ_i = Σ_k w_ik e(a_k),   w_ik from c_ik = KL(π(.|s_i, ā_i) ‖ π(.|s_i, e(a_k)))

from ``cmfq.causal_weights`` on the online network's head (the fused op), without gradient: the
agent acts on Q(s, ., ǎ) and ǎ is stored, so the TD target is MFQ's with ǎ' in place of ā':

    y = r + γ (1 - done) Σ_a π(a|s', ǎ') Q_target(s', a, ǎ')

``causal_temperature`` is the τ of the policies compared in c_ik (fixed, so that the weighting
does not drift while exploration anneals). ``weighting`` turns scores s_ik into weights:
"proportional" (w = s / Σ s, the paper's), "softmax" (softmax of s / ``weight_temperature``),
"relative" (softmax of (s_ik / mean_k s_ik) / ``relative_temperature``: the weights of the
effects' own scale, the same for c and 10·c), or "uniform", the control of the weighting: the
agent acts on MFQ's plain mean action, exactly as MFQ does, while the effects are still measured
for the diagnostics, so that a comparison with it isolates the weighting.

``weight_scores`` says what is weighted: "effects" (s = c, causal) or "distance", the non-causal
control of the same shape, s_ik = ‖e(a_k) − ā_i‖², which weights the neighbours whose action is
rare among them first and reads no Q: whatever separates CMFQ from it is causal, not "minority
first". The relative weighting and the distance scores are computed here from the op's effects,
with a uniform fallback on a policy-change scale: an agent whose summed effect Σ_k c_ik is below
``fallback_effect`` nats (no neighbour's action moves its policy measurably, as for a network
that has not learned to listen) weights its neighbours uniformly, under either scores, so that
a control falls back where its causal twin does. The agent then acts on Q(s, ., ǎ) through one
more forward of the head, and ǎ is what the replay stores. The paper's proportional and the
softmax weighting of effects stay the op's own (its fallback below ``EFFECT_THRESHOLD``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cmfq import causal_weights
from cmfq._C import WEIGHTINGS as OP_WEIGHTINGS
from cmfq.algos.common import QValues, TeamInput, mean_action
from cmfq.algos.mfq import MFQ
from cmfq.algos.network import NetworkOptions
from cmfq.envs import GroupSpec
from cmfq.options import check_bounds, option

WEIGHTINGS = (*OP_WEIGHTINGS, "relative", "uniform")
"""cmfq's weightings: the op's, the scale-free relative one, and the uniform control."""

SCORES = ("effects", "distance")
"""What a weighting weights: the causal effects, or the non-causal control's distances."""


@dataclass
class CMFQOptions:
    """cmfq's options: its fields of a run's config, its keyword arguments here."""

    causal_temperature: float = option(
        0.1, "cmfq: temperature of the policies whose divergence is the causal effect.",
        positive=True)
    weighting: str = option(
        "proportional", "cmfq: how scores (weight_scores) become weights: proportional (w = s / "
        "Σ s, the paper's), softmax (of s / weight_temperature), relative (softmax of (s_ik / "
        "mean_k s_ik) / relative_temperature: independent of the scores' size), or uniform (the "
        "control: MFQ's plain mean action, effects still measured for the diagnostics).",
        choices=WEIGHTINGS)
    weight_temperature: float = option(
        1.0, "cmfq, softmax weighting: the temperature of the softmax over the effects, in nats; "
        "far above the effects the weights are near uniform, far below them near the largest "
        "effect's.", positive=True)
    relative_temperature: float = option(
        1.0, "cmfq, relative weighting: the temperature of the softmax over s_ik / mean_k s_ik "
        "(no unit: at 1 a neighbour scored twice the mean weighs e times one scored at the "
        "mean; large: near uniform; small: near the largest score's).", positive=True)
    weight_scores: str = option(
        "effects", "cmfq: what the weighting weights: effects (the causal effects c_ik) or "
        "distance (the non-causal control, ‖e(a_k) − ā_i‖², which reads no Q and weights the "
        "minority's actions first). Not with the softmax weighting (whose temperature is in "
        "nats).", choices=SCORES)
    fallback_effect: float = option(
        0.01, "cmfq, relative weighting or distance scores: an agent whose summed effect Σ_k c_ik "
        "is below this many nats (no neighbour moves its policy measurably: KL 0.01 is a total "
        "variation near 0.07) weights its neighbours uniformly, under either scores.")


class CMFQ(MFQ):
    name = "cmfq"
    options = CMFQOptions

    def __init__(
        self,
        spec: GroupSpec,
        *,
        gamma: float = 0.95,
        td_target: str = "boltzmann",
        neighbor_branch: str = NetworkOptions.neighbor_branch,
        causal_temperature: float = CMFQOptions.causal_temperature,
        weighting: str = CMFQOptions.weighting,
        weight_temperature: float = CMFQOptions.weight_temperature,
        relative_temperature: float = CMFQOptions.relative_temperature,
        weight_scores: str = CMFQOptions.weight_scores,
        fallback_effect: float = CMFQOptions.fallback_effect,
    ) -> None:
        super().__init__(spec, gamma=gamma, td_target=td_target, neighbor_branch=neighbor_branch)
        check_bounds(CMFQOptions(causal_temperature, weighting, weight_temperature,
                                 relative_temperature, weight_scores, fallback_effect))
        if weight_scores == "distance" and weighting == "softmax":
            raise ValueError("weight_scores='distance' takes the proportional or relative "
                             "weighting; softmax's temperature is in nats")
        if fallback_effect < 0:
            raise ValueError(f"fallback_effect must be >= 0, got {fallback_effect}")
        self.causal_temperature = causal_temperature
        self.weighting = weighting
        self.weight_temperature = weight_temperature
        self.relative_temperature = relative_temperature
        self.weight_scores = weight_scores
        self.fallback_effect = fallback_effect

    @property
    def weights_here(self) -> bool:
        """Whether the weights are computed here from the op's effects (the relative weighting,
        the distance scores) rather than by the op; the uniform control ignores the scores."""
        return self.weighting == "relative" or (
            self.weight_scores == "distance" and self.weighting != "uniform")

    def q_values(self, team: TeamInput) -> QValues:
        with torch.no_grad():
            emb = self.net.embed(team.view, team.features)
            out = causal_weights(
                self.net.head,
                emb,
                team.neighbor_actions,
                temperature=self.causal_temperature,
                # The others measure the effects as the default weighting does.
                weighting="softmax" if self.weighting == "softmax" else "proportional",
                weight_temperature=self.weight_temperature,
            )
            if self.weights_here:
                weights = self.weights(out.effects, team.neighbor_actions)
                one_hot = F.one_hot(team.neighbor_actions.clamp(min=0), self.net.n_actions)
                causal_mean = (weights.unsqueeze(-1) * one_hot.to(weights.dtype)).sum(1)
                return QValues(self.net.head(emb, causal_mean), causal_mean, weights, out.effects)
        if self.weighting == "uniform":
            plain = super().q_values(team)
            valid = team.neighbor_actions >= 0
            uniform = valid / valid.sum(1, keepdim=True).clamp(min=1)
            return plain._replace(weights=uniform, effects=out.effects)
        return QValues(out.q_causal, out.causal_mean_action, out.weights, out.effects)

    def weights(self, effects: torch.Tensor, neighbor_actions: torch.Tensor) -> torch.Tensor:
        """w [n, K] of the relative weighting or the distance scores (0 where masked), from the
        op's ``effects`` [n, K] of neighbours acting ``neighbor_actions`` (-1 = masked)."""
        valid = neighbor_actions >= 0
        count = valid.sum(1, keepdim=True)
        uniform = valid / count.clamp(min=1)
        if self.weight_scores == "effects":
            scores = effects
        else:
            plain = mean_action(neighbor_actions, self.net.n_actions).to(effects.dtype)
            # ‖e(a_k) − ā‖² = 1 − 2 ā[a_k] + ‖ā‖²
            own = plain.gather(1, neighbor_actions.clamp(min=0))
            scores = (1 - 2 * own + (plain**2).sum(1, keepdim=True)).clamp(min=0)
        scores = torch.where(valid, scores, 0.0)
        total = scores.sum(1, keepdim=True)
        if self.weighting == "relative":
            relative = scores * count / total.clamp(min=torch.finfo(scores.dtype).tiny)
            logits = (relative / self.relative_temperature).masked_fill(~valid, float("-inf"))
            weighted = torch.softmax(logits, 1).nan_to_num(0.0)  # no neighbour: all -inf
        else:
            weighted = scores / total.clamp(min=torch.finfo(scores.dtype).tiny)
        quiet = (effects.sum(1, keepdim=True) < self.fallback_effect) | (total <= 0)
        return torch.where(quiet, uniform.to(scores.dtype), weighted)
