"""IL: independent DQN. Each agent learns Q(s, a) as if alone.

    y = r + γ (1 - done) V(s')

with V(s') from ``td_target``, the same as the mean-field algorithms' (default: the Boltzmann value
Σ_a π(a|s') Q_target(s', a)), so that a comparison differs only in the neighbour input. The
shared network's neighbour input is always the zero vector, so its action branch is a constant.
"""

from __future__ import annotations

import torch

from cmfq.algos.common import Algorithm, Batch, QValues, TeamInput, td_loss


class IL(Algorithm):
    name = "il"

    def q_values(self, team: TeamInput) -> QValues:
        none = team.view.new_zeros(team.view.shape[0], self.net.n_actions)
        return QValues(self.net(team.view, team.features, none), none)

    def loss(
        self, batch: Batch, target: Algorithm, temperature: float | torch.Tensor
    ) -> torch.Tensor:
        none = batch.neighbor_input.new_zeros(batch.neighbor_input.shape)
        q = self.net(batch.view[batch.obs], batch.features[batch.obs], none)
        q = q.gather(1, batch.action[:, None]).squeeze(1)
        with torch.no_grad():
            s_next = (batch.view[batch.next_obs], batch.features[batch.next_obs])
            q_next = target.net(*s_next, none)
            next_value = self.next_value(q_next, lambda: self.net(*s_next, none), temperature)
        return td_loss(q, batch.reward, batch.done, next_value, self.gamma)
