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

``NeighborSensitivity`` measures, for every algorithm, how much the policy moves when its
neighbour input x moves (``SENSITIVITY``), on every ``SAMPLE_EVERY``-th decision of the round:

- ``sensitivity``: the mean KL(π(.|s, x) ‖ π(.|s, u)) with u the uniform action (1/A each);
- ``sensitivity_swap``: the mean KL(π(.|s, x) ‖ π(.|s, x')) with x' another sampled decision's
  neighbour input (the sample rolled by half its length: no random draw);

with π = softmax(Q / ``SENSITIVITY_TEMPERATURE``), a fixed temperature so that rounds compare
while exploration anneals. x is the input the agent acted with (ā for mfq, ǎ for cmfq, the
attention's for amfq). ``*_floor`` is the same measure, at the same states and inputs, of a
freshly initialised network of the same architecture and seed (the run's weights before its
first update): a network that has learned nothing about its neighbours. IL's neighbour input is
always zero, so its ``sensitivity_swap`` is 0 and its ``sensitivity`` says how its head answers
an input it never sees (learned nothing from neighbours; it stays near its floor or drifts with
the trunk's scale), not what it uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cmfq._C import EFFECT_THRESHOLD
from cmfq.algos.common import Algorithm, QValues, TeamInput, mean_action

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


SENSITIVITY = ("sensitivity", "sensitivity_floor", "sensitivity_swap", "sensitivity_swap_floor")
"""The neighbour-sensitivity measures' names, as logged."""

SENSITIVITY_TEMPERATURE = 0.1
"""τ of the policies whose divergence is the sensitivity: cmfq's default causal temperature, so
that a sensitivity and cmfq's effects compare."""

SAMPLE_EVERY = 8
"""The sensitivity is measured on every 8th decision (row) of a round: a few hundred rows of a
battle round, a few extra head forwards of them at the round's end."""


class NeighborSensitivity:
    """How much ``algo``'s policy, and ``floor``'s (the same architecture freshly initialised),
    move when the neighbour input moves, on a sample of the decisions ``add``-ed (see the
    module's docstring); ``means()`` measures them. Draws no random numbers."""

    def __init__(self, algo: Algorithm, floor: Algorithm) -> None:
        self.algo, self.floor = algo, floor
        self._seen = 0
        self._sample: list[tuple[torch.Tensor, ...]] = []

    def add(self, team: TeamInput, neighbor_input: torch.Tensor, rows: int) -> None:
        """Keep the sampled ones of the first ``rows`` rows of one decision (the others are
        padding): their view, features and the neighbour input they acted with."""
        first = -self._seen % SAMPLE_EVERY
        self._seen += rows
        if first < rows:
            picked = torch.arange(first, rows, SAMPLE_EVERY, device=neighbor_input.device)
            self._sample.append(tuple(t.index_select(0, picked) for t in (
                team.view, team.features, neighbor_input)))

    @torch.no_grad()
    def means(self) -> dict[str, float]:
        """Each measure's mean over the sample; NaN without one (or with one row for a swap)."""
        if not self._sample:
            return dict.fromkeys(SENSITIVITY, math.nan)
        view, features, x = (torch.cat(parts) for parts in zip(*self._sample, strict=True))
        uniform = torch.full_like(x, 1.0 / x.shape[1])
        swapped = x.roll(x.shape[0] // 2, 0)
        out = {}
        for suffix, algo in (("", self.algo), ("_floor", self.floor)):
            emb = algo.net.embed(view, features)
            logp = _log_policy(algo.net.head(emb, x))
            out["sensitivity" + suffix] = _kl(logp, _log_policy(algo.net.head(emb, uniform)))
            out["sensitivity_swap" + suffix] = (
                _kl(logp, _log_policy(algo.net.head(emb, swapped))) if x.shape[0] > 1
                else math.nan)
        return {name: out[name] for name in SENSITIVITY}


def _log_policy(q: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(q.double() / SENSITIVITY_TEMPERATURE, -1)


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> float:
    """The mean over rows of KL(p ‖ q) in nats."""
    return float((logp.exp() * (logp - logq)).sum(1).mean())
