"""An existing MFQ network's weights in ``cmfq.MeanFieldHead``: its numbers through the fused op.

The network below is written the way the PyTorch port of the original MFQ code
(github.com/deligentfool/mfrl_pytorch, ``algo/base.py``) writes its ``ValueNet``: a view
convolution and a feature embedding make the state embedding (256 + 32 = 288 features), the mean
action goes through ``prob_emb_linear`` (``Linear(21, 64), ReLU, Linear(64, 32)``: no ReLU after
its last layer, unlike the original TensorFlow code) and ``final_linear`` gives the 21 action
values. ``MeanFieldHead(288, 21, action_relu_last=False)`` is that mean-action branch and
``final_linear``; the port's weights load into it as they are. The script prints the largest
difference between the fused op's ``q_causal`` and the port's own forward at the causal mean
action (float32), between ``cmfq.causal_weights`` on the port's network (its generic path, which
calls the network as it is) and on the head (the fused kernels) in float64, and each path's
float32 error against those. Sizes are magent2's battle (view 13 x 13 x 5, 32 features, 21
actions).

    python examples/mfq_port_weights.py
"""

import torch
from torch import nn

import cmfq

VIEW, FEATURES, ACTIONS = (13, 13, 5), 32, 21


def port_value_net() -> nn.ModuleDict:
    """The port's ``ValueNet._construct_net`` with ``use_mf=True``."""
    net = nn.ModuleDict()
    net["conv1"] = nn.Conv2d(in_channels=VIEW[2], out_channels=32, kernel_size=3)
    net["conv2"] = nn.Conv2d(in_channels=32, out_channels=32, kernel_size=3)
    flat = 32 * (VIEW[0] - 4) * (VIEW[1] - 4)
    net["obs_linear"] = nn.Linear(flat, 256)
    net["emb_linear"] = nn.Linear(FEATURES, 32)
    net["prob_emb_linear"] = nn.Sequential(nn.Linear(ACTIONS, 64), nn.ReLU(), nn.Linear(64, 32))
    net["final_linear"] = nn.Sequential(
        nn.Linear(320, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, ACTIONS)
    )
    return net


def state_embedding(net: nn.ModuleDict, obs: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """The port's state half, as its ``act`` computes it before the mean action joins."""
    h = torch.relu(net["conv2"](torch.relu(net["conv1"](obs)))).flatten(start_dim=1)
    return torch.cat([net["obs_linear"](h), net["emb_linear"](feature)], -1)


def main() -> None:
    torch.manual_seed(0)
    net = port_value_net()

    head = cmfq.MeanFieldHead(288, ACTIONS, action_hidden=(64, 32), hidden=(128, 64),
                              action_relu_last=False)
    head.action_encoder.load_state_dict(net["prob_emb_linear"].state_dict())
    head.trunk.load_state_dict(net["final_linear"].state_dict())

    def port_q(state: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """The port's Q(s, ., prob): its ``final_linear`` on [s, prob_emb_linear(prob)]."""
        return net["final_linear"](torch.cat([state, net["prob_emb_linear"](prob)], -1))

    agents, slots = 256, 8
    obs = torch.rand(agents, VIEW[2], VIEW[0], VIEW[1])
    feature = torch.rand(agents, FEATURES)
    actions = torch.randint(0, ACTIONS, (agents, slots))
    actions[torch.rand(agents, slots) < 0.25] = -1  # empty neighbour slots
    with torch.no_grad():
        state = state_embedding(net, obs, feature)
        fused = cmfq.causal_weights(head, state, actions)  # float32, the fused kernels
        port = cmfq.causal_weights(port_q, state, actions, n_actions=ACTIONS)  # generic path
        gap = (fused.q_causal - port_q(state, fused.causal_mean_action)).abs().max()
        print("float32: the fused op's q_causal against the port's own forward at the causal mean "
              f"action: max |difference| {gap:.1e}")
        net.double(), head.double()
        exact = cmfq.causal_weights(port_q, state.double(), actions, n_actions=ACTIONS)
        fused64 = cmfq.causal_weights(head, state.double(), actions)

    print("float64: the port's network (generic path) against MeanFieldHead (fused kernels):")
    for name, a, b in zip(cmfq.CausalWeights._fields, exact, fused64):
        print(f"  {name:20s} max |difference| {(a - b).abs().max():.1e}")
    # In float32 both paths round: small effects (a fresh network's are ~1e-4 nats) leave the
    # weights a few 1e-6 off; the fused kernels carry the change of Q itself and keep more digits.
    print("float32 against those float64 numbers: the port's network (generic), MeanFieldHead:")
    for name, a, b, e in zip(cmfq.CausalWeights._fields, port, fused, exact):
        errors = (a.double() - e).abs().max(), (b.double() - e).abs().max()
        print(f"  {name:20s} max |error| {errors[0]:.1e}, {errors[1]:.1e}")

    # A module the fused kernels do not evaluate is refused at the call, not computed otherwise.
    head.action_encoder = nn.Sequential(nn.Linear(ACTIONS, 64), nn.Tanh(), nn.Linear(64, 32))
    try:
        cmfq.causal_weights(head.double(), state.double(), actions)
    except ValueError as error:
        print(f"a Tanh in the action branch: ValueError: {error}")


if __name__ == "__main__":
    main()
