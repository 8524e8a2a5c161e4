"""AMFQ: attention mean-field Q-learning, the attention-weighted baseline. Agent i weights its
neighbours by learned attention between state embeddings h = embed(s):

    α_ik = softmax_k( (W_q h_i) · (W_k h_k) / √d ),   ā_i = Σ_k α_ik e(a_k)

and learns Q(s_i, a_i, ā_i) as MFQ does; the attention is trained through the TD loss, so a batch
carries the neighbours' observations. The target recomputes ā' with the target network:

    y = r + γ (1 - done) Σ_a π(a|s', ā') Q_target(s', a, ā')    (other td_target: as in MFQ)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cmfq.algos.common import Algorithm, Batch, QValues, TeamInput, td_loss
from cmfq.algos.network import NetworkOptions
from cmfq.envs import GroupSpec
from cmfq.options import option


@dataclass
class AMFQOptions:
    """amfq's options: its fields of a run's config, its keyword arguments here."""

    attention_dim: int = option(64, "amfq: width of the attention's queries and keys.",
                                positive=True)


class AMFQ(Algorithm):
    name = "amfq"
    options = AMFQOptions
    needs_neighbor_obs = True

    def __init__(
        self,
        spec: GroupSpec,
        *,
        gamma: float = 0.95,
        td_target: str = "boltzmann",
        neighbor_branch: str = NetworkOptions.neighbor_branch,
        attention_dim: int = AMFQOptions.attention_dim,
    ) -> None:
        super().__init__(spec, gamma=gamma, td_target=td_target, neighbor_branch=neighbor_branch)
        state_dim = self.net.head.state_dim
        self.query = nn.Linear(state_dim, attention_dim)
        self.key = nn.Linear(state_dim, attention_dim)

    def attention(
        self, emb: torch.Tensor, agents: torch.Tensor, neighbors: torch.Tensor,
        neighbor_actions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(α [n, K], ā [n, A]) for the agents at rows ``agents`` of ``emb``, attending over
        ``neighbors``."""
        valid = (neighbors >= 0) & (neighbor_actions >= 0)
        query = self.query(emb[agents])
        keys = self.key(emb[neighbors.clamp(min=0)])
        logits = (keys @ query.unsqueeze(-1)).squeeze(-1) / math.sqrt(query.shape[-1])
        logits = logits.masked_fill(~valid, float("-inf"))
        # Agents without a valid neighbour get all -inf logits: their weights (NaN) become 0.
        alpha = torch.softmax(logits, -1).nan_to_num(0.0)
        one_hot = F.one_hot(neighbor_actions.clamp(min=0), self.net.n_actions).to(emb.dtype)
        return alpha, (alpha.unsqueeze(-1) * one_hot).sum(1)

    def attention_mean_action(
        self, emb: torch.Tensor, agents: torch.Tensor, neighbors: torch.Tensor,
        neighbor_actions: torch.Tensor,
    ) -> torch.Tensor:
        """ā [n, A] of ``attention``."""
        return self.attention(emb, agents, neighbors, neighbor_actions)[1]

    def q_values(self, team: TeamInput) -> QValues:
        emb = self.net.embed(team.view, team.features)
        agents = torch.arange(emb.shape[0], device=emb.device)
        alpha, mean = self.attention(emb, agents, team.neighbors, team.neighbor_actions)
        return QValues(self.net.head(emb, mean), mean, alpha)

    def loss(
        self, batch: Batch, target: Algorithm, temperature: float | torch.Tensor
    ) -> torch.Tensor:
        emb = self.net.embed(batch.view, batch.features)
        mean = self.attention_mean_action(
            emb, batch.obs, batch.neighbors, batch.neighbor_actions
        )
        q = self.net.head(emb[batch.obs], mean).gather(1, batch.action[:, None]).squeeze(1)
        with torch.no_grad():
            target_emb = target.net.embed(batch.view, batch.features)
            next_mean = target.attention_mean_action(
                target_emb, batch.next_obs, batch.next_neighbors, batch.next_neighbor_actions
            )
            q_next = target.net.head(target_emb[batch.next_obs], next_mean)

            def online_q_next() -> torch.Tensor:
                online_next = self.attention_mean_action(
                    emb, batch.next_obs, batch.next_neighbors, batch.next_neighbor_actions
                )
                return self.net.head(emb[batch.next_obs], online_next)

            next_value = self.next_value(q_next, online_q_next, temperature)
        return td_loss(q, batch.reward, batch.done, next_value, self.gamma)
