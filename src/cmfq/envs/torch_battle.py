"""``battle`` on tensors: ``BattleEnv``'s game (magent2's battle with our settings) for G games."""

from __future__ import annotations

import numpy as np
import torch

from cmfq.envs.battle import AGENT_DENSITY, KILL_REWARD, block_positions
from cmfq.envs.torch_grid import AgentKind, TorchGridWorld


class TorchBattle(TorchGridWorld):
    """Red against blue, as ``BattleEnv`` (same options and defaults), every game starting from
    the same two blocks."""

    name = "battle"
    groups = ("red", "blue")
    engine_order = ("red", "blue")

    def __init__(
        self,
        map_size: int,
        *,
        max_steps: int = 400,
        agents_per_side: int | None = None,
        minimap_mode: bool = True,
        step_reward: float = -0.005,
        dead_penalty: float = -0.1,
        attack_penalty: float = -0.1,
        attack_opponent_reward: float = 0.2,
        device: torch.device | str = "cpu",
        compile: bool = False,
    ) -> None:
        if map_size < 12:
            raise ValueError(f"battle needs map_size >= 12, got {map_size}")
        n = int(AGENT_DENSITY * map_size**2) if agents_per_side is None else agents_per_side
        if n < 1:
            raise ValueError(f"agents_per_side must be >= 1, got {n}")
        self._blocks = block_positions(map_size, n)
        self.agents_per_side = n
        self.minimap_mode = bool(minimap_mode)
        self.attack_opponent_reward = attack_opponent_reward
        small = AgentKind(
            hp=10, speed=2, view_radius=6, attack_radius=1.5, damage=2,
            kill_reward=KILL_REWARD, step_recover=0.1, step_reward=step_reward,
            dead_penalty=dead_penalty, attack_penalty=attack_penalty,
        )
        super().__init__(map_size, {"red": n, "blue": n}, {"red": small, "blue": small},
                         max_steps=max_steps, device=device, compile=compile)

    def _place(self, games, generator):
        blocks = torch.from_numpy(np.concatenate(self._blocks)[:, :2]).long()
        return blocks.expand(games, -1, -1), self.border(games)

    def _rule_rewards(self, reward, hit, victim):
        # magent2's rule "a attacks b" for either side: only enemies can be hit.
        return torch.where(hit, reward + self.attack_opponent_reward, reward)
