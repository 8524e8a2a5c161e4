"""IL: independent DQN. Each agent learns Q(s, a) as if alone.

    y = r + γ (1 - done) max_a' Q_target(s', a')        (double_q: Q_target(s', argmax Q(s', .)))

The shared network's neighbour input is always the zero vector, so its action branch is a constant.
"""

from __future__ import annotations

import torch

from cmfq.algos.common import (
    Algorithm,
    Batch,
    TeamInput,
    double_q_value,
    max_value,
    td_loss,
)


class IL(Algorithm):
    name = "il"

    def q_values(self, team: TeamInput) -> tuple[torch.Tensor, torch.Tensor]:
        none = team.view.new_zeros(team.view.shape[0], self.net.n_actions)
        return self.net(team.view, team.features, none), none

    def loss(self, batch: Batch, target: Algorithm, temperature: float) -> torch.Tensor:
        none = batch.mean_action.new_zeros(batch.mean_action.shape)
        emb = self.net.embed(batch.view, batch.features)
        q = self.net.head(emb[batch.obs], none).gather(1, batch.action[:, None]).squeeze(1)
        with torch.no_grad():
            target_emb = target.net.embed(batch.view, batch.features)
            q_next = target.net.head(target_emb[batch.next_obs], none)
            if self.double_q:
                next_value = double_q_value(q_next, self.net.head(emb[batch.next_obs], none))
            else:
                next_value = max_value(q_next)
        return td_loss(q, batch.reward, batch.done, next_value, self.gamma)
