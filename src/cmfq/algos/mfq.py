"""MFQ: mean-field Q-learning (Yang et al. 2018). Agent i learns Q(s_i, a_i, ā_i), with ā_i the
mean one-hot of its neighbours' previous actions, and acts by sampling π = softmax(Q(s, ., ā) / τ).

    y = r + γ (1 - done) Σ_a π(a|s', ā') Q_target(s', a, ā')     (td_target "boltzmann")

("max": max_a Q_target; "double": Q_target at argmax_a Q(s', a, ā'), the original code's.)
ā' is the neighbour input the agent acted with at s', stored in the replay buffer. Each network
embeds only the observations it needs: the online one s, the target one s'.
"""

from __future__ import annotations

import torch

from cmfq.algos.common import Algorithm, Batch, QValues, TeamInput, mean_action, td_loss


class MFQ(Algorithm):
    name = "mfq"

    def q_values(self, team: TeamInput) -> QValues:
        mean = mean_action(team.neighbor_actions, self.net.n_actions)
        return QValues(self.net(team.view, team.features, mean), mean)

    def loss(
        self, batch: Batch, target: Algorithm, temperature: float | torch.Tensor
    ) -> torch.Tensor:
        q = self.net(batch.view[batch.obs], batch.features[batch.obs], batch.neighbor_input)
        q = q.gather(1, batch.action[:, None]).squeeze(1)
        with torch.no_grad():
            s_next = (batch.view[batch.next_obs], batch.features[batch.next_obs])
            q_next = target.net(*s_next, batch.next_neighbor_input)
            next_value = self.next_value(
                q_next, lambda: self.net(*s_next, batch.next_neighbor_input), temperature
            )
        return td_loss(q, batch.reward, batch.done, next_value, self.gamma)
