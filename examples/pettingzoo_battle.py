"""CMFQ in your own code: magent2's battle through the PettingZoo API, your own Q-network.

Red learns with one-step Q-learning on the *causal* mean action of its nearest teammates, which
``cmfq.causal_weights`` computes from the Q-network's head; blue acts at random. Nothing here
comes from ``cmfq``'s training code: the environment is the stock PettingZoo one, the neighbours
come from the agents' positions, and the only calls into ``cmfq`` are ``MeanFieldHead`` (the
last layers of the Q-network) and ``causal_weights``.

    python examples/pettingzoo_battle.py      # seconds to a minute on a laptop CPU
"""

from __future__ import annotations

import copy
import random

import numpy as np
import torch
from magent2.environments import battle_v4
from torch import nn

import cmfq

MAP_SIZE = 20  # 16 agents a side
MAX_CYCLES = 60
EPISODES = 8
NEIGHBOURS = 6  # the K nearest teammates within NEIGHBOUR_RADIUS cells
NEIGHBOUR_RADIUS = 6.0
GAMMA = 0.95
EPSILON = 0.2
TEMPERATURE = 0.1  # of the Boltzmann policies that causal_weights compares
UPDATES_PER_EPISODE = 40
BATCH = 128
SEED = 0


class QNetwork(nn.Module):
    """Q(s, ·, ǎ): a small MLP embeds the agent's view; ``cmfq.MeanFieldHead`` takes it from there
    (its layers are what the fused kernels evaluate under every neighbour's action)."""

    def __init__(self, view_shape: tuple[int, ...], n_actions: int, embedding: int = 64) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(int(np.prod(view_shape)), embedding), nn.ReLU()
        )
        self.head = cmfq.MeanFieldHead(embedding, n_actions, action_hidden=(32,), hidden=(64,))

    def causal(self, views: torch.Tensor, neighbour_actions: torch.Tensor) -> cmfq.CausalWeights:
        """The causal mean action of each agent's neighbours and the values it gives."""
        return cmfq.causal_weights(
            self.head, self.embed(views), neighbour_actions, temperature=TEMPERATURE
        )


def positions(env) -> dict[str, np.ndarray]:
    """Each live agent's (x, y) cell, read from the magent2 engine behind the PettingZoo env."""
    raw = env.unwrapped
    cells = {}
    for handle in raw.handles:
        for agent_id, cell in zip(raw.env.get_agent_id(handle), raw.env.get_pos(handle)):
            cells[raw.possible_agents[agent_id]] = cell
    return cells


def neighbour_actions(
    team: list[str], cells: dict[str, np.ndarray], last_action: dict[str, int]
) -> torch.Tensor:
    """[n, K] last actions of each agent's K nearest teammates within the radius, -1 where none."""
    xy = torch.tensor(np.stack([cells[a] for a in team]), dtype=torch.float32)
    distance = torch.cdist(xy, xy).fill_diagonal_(float("inf"))
    k = min(NEIGHBOURS, len(team) - 1)
    nearest = distance.topk(k, largest=False)
    actions = torch.tensor([last_action[a] for a in team])[nearest.indices]
    out = torch.full((len(team), NEIGHBOURS), -1, dtype=torch.long)
    out[:, :k] = torch.where(nearest.values <= NEIGHBOUR_RADIUS, actions, -1)
    return out


def play_episode(env, net: QNetwork, episode: int) -> tuple[list[tuple], float]:
    """One ε-greedy episode of red against random blue; red's transitions and its total reward."""
    observations, _ = env.reset(seed=SEED + episode)
    last_action = {agent: -1 for agent in env.agents}  # -1: no action yet, masked out
    transitions, total_reward = [], 0.0
    while env.agents:
        red = [a for a in env.agents if a.startswith("red")]
        views = torch.as_tensor(np.stack([observations[a] for a in red]))
        neighbours = neighbour_actions(red, positions(env), last_action)
        with torch.no_grad():
            greedy = net.causal(views, neighbours).q_causal.argmax(-1).tolist()
        actions = {a: random.randrange(env.action_space(a).n) for a in env.agents}
        for agent, best in zip(red, greedy):
            actions[agent] = best if random.random() > EPSILON else actions[agent]
        observations, rewards, terminations, truncations, _ = env.step(actions)
        last_action.update(actions)
        # After the step: who is still there, and their neighbours' actions in the next state.
        survivors = [a for a in red if a in observations and not terminations.get(a, True)]
        next_neighbours = (
            neighbour_actions(survivors, positions(env), last_action) if survivors else None
        )
        for i, agent in enumerate(red):
            if agent in survivors:
                j = survivors.index(agent)
                after = torch.as_tensor(observations[agent]), next_neighbours[j]
            else:  # no next state: zeros that the (1 - done) factor ignores
                after = torch.zeros_like(views[i]), torch.full((NEIGHBOURS,), -1)
            done = agent not in survivors or truncations.get(agent, False)
            reward = rewards.get(agent, 0.0)
            transitions.append((views[i], neighbours[i], actions[agent], reward, *after, done))
            total_reward += reward
    return transitions, total_reward


def td_loss(net: QNetwork, target: QNetwork, batch: list[tuple]) -> torch.Tensor:
    """One-step Q-learning on the causal mean action, differentiated through causal_weights."""
    views, neighbours, actions, rewards, next_views, next_neighbours, done = (
        torch.stack([torch.as_tensor(t[i]) for t in batch]) for i in range(7)
    )
    q = net.causal(views, neighbours).q_causal.gather(1, actions[:, None]).squeeze(1)
    with torch.no_grad():
        next_q = target.causal(next_views, next_neighbours).q_causal.max(-1).values
        y = rewards.float() + GAMMA * (1 - done.float()) * next_q
    return nn.functional.smooth_l1_loss(q, y)


def main() -> None:
    random.seed(SEED)
    torch.manual_seed(SEED)
    # Batches of a few hundred rows: more threads cost more in synchronisation than they gain.
    torch.set_num_threads(1)
    env = battle_v4.parallel_env(map_size=MAP_SIZE, max_cycles=MAX_CYCLES)
    env.reset(seed=SEED)
    first = env.agents[0]
    net = QNetwork(env.observation_space(first).shape, env.action_space(first).n)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    replay: list[tuple] = []
    losses: list[float] = []
    for episode in range(EPISODES):
        transitions, reward = play_episode(env, net, episode)
        replay += transitions
        target = copy.deepcopy(net)  # fixed for the episode's updates
        for _ in range(UPDATES_PER_EPISODE):
            loss = td_loss(net, target, random.sample(replay, min(BATCH, len(replay))))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        episode_loss = np.mean(losses[-UPDATES_PER_EPISODE:])
        print(f"episode {episode}: red reward {reward:7.2f}   mean TD loss {episode_loss:.2e}")
    print(f"TD loss: {losses[0]:.2e} at the first update, {np.mean(losses[-20:]):.2e} over the "
          "last 20")

    # What the op gives one agent of the last step: a weight for each of its neighbours.
    views, neighbours = replay[-1][:2]
    with torch.no_grad():
        out = net.causal(views[None], neighbours[None])
    print("neighbour actions", neighbours.tolist())
    print("causal weights   ", [round(w, 3) for w in out.weights[0].tolist()])
    env.close()


if __name__ == "__main__":
    main()
