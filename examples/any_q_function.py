"""Causal weights for any Q-function, then the same numbers from the fused kernel.

``cmfq.causal_weights`` takes any callable ``q(state[N, S], x[N, A]) -> [N, A]`` (a batched
PyTorch path: every neighbour intervention is a row of one batch). When the Q-function has the
shape of a ``cmfq.MeanFieldHead`` (an MLP on the action, concatenated to the state, then an MLP),
loading its layers into a head gives the fused C++/CUDA kernel, with the same numbers and
gradients.

    python examples/any_q_function.py      # a few seconds
"""

from __future__ import annotations

import torch
from torch import nn

import cmfq

STATE_DIM, N_ACTIONS, AGENTS, SLOTS = 32, 9, 64, 8


class MyQ(nn.Module):
    """A Q-network as it might exist in your code: Q(s, ·, x) for a mean action x."""

    def __init__(self) -> None:
        super().__init__()
        self.action_mlp = nn.Sequential(nn.Linear(N_ACTIONS, 24), nn.ReLU())
        self.value_mlp = nn.Sequential(
            nn.Linear(STATE_DIM + 24, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(),
            nn.Linear(48, N_ACTIONS),
        )

    def forward(self, state: torch.Tensor, mean_action: torch.Tensor) -> torch.Tensor:
        return self.value_mlp(torch.cat([state, self.action_mlp(mean_action)], dim=-1))


def main() -> None:
    torch.manual_seed(0)
    my_q = MyQ()
    state = torch.randn(AGENTS, STATE_DIM, requires_grad=True)
    actions = torch.randint(0, N_ACTIONS, (AGENTS, SLOTS))
    actions[::4, 5:] = -1  # -1: an empty neighbour slot

    # 1. The generic path: any callable, given the number of actions.
    generic = cmfq.causal_weights(my_q, state, actions, n_actions=N_ACTIONS)

    # 2. The fused kernel: the same layers loaded into a MeanFieldHead.
    head = cmfq.MeanFieldHead(STATE_DIM, N_ACTIONS, action_hidden=(24,), hidden=(48, 48))
    head.action_encoder.load_state_dict(my_q.action_mlp.state_dict())
    head.trunk.load_state_dict(my_q.value_mlp.state_dict())
    fused = cmfq.causal_weights(head, state, actions)

    print(f"{'output':20s} {'shape':>10s} {'max |generic - fused|':>22s}")
    for name, a, b in zip(generic._fields, generic, fused):
        print(f"{name:20s} {str(tuple(a.shape)):>10s} {(a - b).abs().max().item():22.2e}")
    worst = max((a - b).abs().max().item() for a, b in zip(generic, fused))

    # Gradients agree too: through the weights, the KL and both Q evaluations.
    (grad_generic,) = torch.autograd.grad(generic.q_causal.sum(), state)
    (grad_fused,) = torch.autograd.grad(fused.q_causal.sum(), state)
    grad_gap = (grad_generic - grad_fused).abs().max().item()
    print(f"{'d q_causal / d state':20s} {str(tuple(state.shape)):>10s} {grad_gap:22.2e}")

    agent = 1
    print(f"\nagent {agent}: neighbour actions {actions[agent].tolist()}")
    print(f"  effects (nats) {[f'{c:.1e}' for c in fused.effects[agent].tolist()]}")
    print(f"  weights        {[round(w, 3) for w in fused.weights[agent].tolist()]}")
    if max(worst, grad_gap) > 1e-4:
        raise SystemExit(f"the two paths disagree by {max(worst, grad_gap):.2e}")
    print("\nthe generic path and the fused kernel agree (float32)")


if __name__ == "__main__":
    main()
