"""MFQ: mean-field Q-learning (Yang et al. 2018). Agent i learns Q(s_i, a_i, ā_i), with ā_i the
mean one-hot of its neighbours' previous actions, and acts by sampling π = softmax(Q(s, ., ā) / τ).

    y = r + γ (1 - done) Σ_a π(a|s', ā') Q_target(s', a, ā')     (the mean-field value)
    double_q: y = r + γ (1 - done) Q_target(s', argmax_a Q(s', a, ā'), ā')   (the original code)

ā' is the neighbour input the agent acted with at s', stored in the replay buffer.
"""

from __future__ import annotations

import torch

from cmfq.algos.common import (
    Algorithm,
    Batch,
    TeamInput,
    boltzmann_value,
    double_q_value,
    mean_action,
    td_loss,
)


class MFQ(Algorithm):
    name = "mfq"

    def q_values(self, team: TeamInput) -> tuple[torch.Tensor, torch.Tensor]:
        mean = mean_action(team.neighbor_actions, self.net.n_actions)
        return self.net(team.view, team.features, mean), mean

    def loss(self, batch: Batch, target: Algorithm, temperature: float) -> torch.Tensor:
        emb = self.net.embed(batch.view, batch.features)
        q = self.net.head(emb[batch.obs], batch.mean_action)
        q = q.gather(1, batch.action[:, None]).squeeze(1)
        with torch.no_grad():
            target_emb = target.net.embed(batch.view, batch.features)
            q_next = target.net.head(target_emb[batch.next_obs], batch.next_mean_action)
            if self.double_q:
                q_next_online = self.net.head(emb[batch.next_obs], batch.next_mean_action)
                next_value = double_q_value(q_next, q_next_online)
            else:
                next_value = boltzmann_value(q_next, temperature)
        return td_loss(q, batch.reward, batch.done, next_value, self.gamma)
