"""``causal_weights`` as a TensorDict module, the building block of TorchRL policies.

The causal mean action becomes one more stage of a ``TensorDictSequential``: it reads the state
embedding and the neighbours' actions from the TensorDict and writes the weights, the causal mean
action and the values to act on beside them. Needs ``pip install tensordict``.

    python examples/tensordict_policy.py      # a few seconds
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

import cmfq

OBSERVATION_DIM, EMBEDDING_DIM, N_ACTIONS, AGENTS, SLOTS = 24, 32, 6, 10, 4


class CausalMeanAction(nn.Module):
    """``cmfq.causal_weights`` as a module, so that the head's parameters are the module's."""

    def __init__(self, head: cmfq.MeanFieldHead, temperature: float = 0.1) -> None:
        super().__init__()
        self.head = head
        self.temperature = temperature

    def forward(self, embedding: torch.Tensor, neighbor_actions: torch.Tensor):
        return tuple(cmfq.causal_weights(
            self.head, embedding, neighbor_actions, temperature=self.temperature
        ))


def main() -> None:
    torch.manual_seed(0)
    policy = TensorDictSequential(
        TensorDictModule(
            nn.Sequential(nn.Linear(OBSERVATION_DIM, EMBEDDING_DIM), nn.ReLU()),
            in_keys=["observation"], out_keys=["embedding"],
        ),
        TensorDictModule(
            CausalMeanAction(cmfq.MeanFieldHead(EMBEDDING_DIM, N_ACTIONS)),
            in_keys=["embedding", "neighbor_actions"],
            out_keys=list(cmfq.CausalWeights._fields),
        ),
        TensorDictModule(lambda q: q.argmax(-1), in_keys=["q_causal"], out_keys=["action"]),
    )
    batch = TensorDict(
        observation=torch.randn(AGENTS, OBSERVATION_DIM),
        neighbor_actions=torch.randint(-1, N_ACTIONS, (AGENTS, SLOTS)),  # -1: no neighbour
        batch_size=[AGENTS],
    )
    out = policy(batch)
    print(out)
    print("actions           ", out["action"].tolist())
    print("weights of agent 0", [round(w, 3) for w in out["weights"][0].tolist()])

    # The policy's parameters include the head's, and gradients reach them through the op.
    out["q_causal"].sum().backward()
    head = policy[1].module.head
    assert all(p.grad is not None for p in head.parameters())
    print(f"{sum(p.numel() for p in policy.parameters())} parameters, gradients reach the head")


if __name__ == "__main__":
    main()
