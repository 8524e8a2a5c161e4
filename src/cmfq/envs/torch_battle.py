"""``battle`` on tensors: ``BattleEnv``'s game (magent2's battle with our settings) for G games."""

from __future__ import annotations

import numpy as np
import torch

from cmfq.envs.battle import (
    KILL_REWARD,
    LAYOUTS,
    PUBLISHED_GAP,
    BattleOptions,
    battle_agents_per_side,
    block_positions,
    shifted_choices,
)
from cmfq.envs.counter_rng import below, splitmix64
from cmfq.envs.torch_grid import AgentKind, TorchGridWorld


class TorchBattle(TorchGridWorld):
    """Red against blue, as ``BattleEnv`` (same options and defaults). With the ``shifted``
    layout each game's round draws its gap and offset uniformly from ``shifted_choices``, as
    ``BattleEnv`` does (the same layouts in distribution, not game by game: its draws are the
    game's own, see ``torch_grid.py``)."""

    name = "battle"
    groups = ("red", "blue")
    engine_order = ("red", "blue")

    def __init__(
        self,
        map_size: int,
        *,
        max_steps: int = 400,
        agents_per_side: int | None = BattleOptions.agents_per_side,
        minimap_mode: bool = True,
        step_reward: float = BattleOptions.step_reward,
        dead_penalty: float = BattleOptions.dead_penalty,
        attack_penalty: float = BattleOptions.attack_penalty,
        attack_opponent_reward: float = BattleOptions.attack_opponent_reward,
        layout: str = BattleOptions.layout,
        device: torch.device | str = "cpu",
        compile: bool = False,
        threads: int | None = None,
    ) -> None:
        n = battle_agents_per_side(map_size, agents_per_side)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        self.agents_per_side = n
        self.minimap_mode = bool(minimap_mode)
        self.attack_opponent_reward = attack_opponent_reward
        small = AgentKind(
            hp=10, speed=2, view_radius=6, attack_radius=1.5, damage=2,
            kill_reward=KILL_REWARD, step_recover=0.1, step_reward=step_reward,
            dead_penalty=dead_penalty, attack_penalty=attack_penalty,
        )
        super().__init__(map_size, {"red": n, "blue": n}, {"red": small, "blue": small},
                         max_steps=max_steps, device=device, compile=compile,
                         threads=threads)

        def blocks(gap: int = PUBLISHED_GAP) -> torch.Tensor:
            pair = block_positions(map_size, n, gap)
            return torch.from_numpy(np.concatenate(pair)[:, :2]).long().to(self.device)

        self._fixed = blocks()
        gaps, self._offsets = shifted_choices(map_size, n)
        # The shifted layouts without offset, one per gap; an offset moves both blocks down.
        self._gapped = torch.stack([blocks(gap) for gap in gaps or [PUBLISHED_GAP]])

    def _place(self, keys):
        games = len(keys)
        if self.layout == "fixed":
            return self._fixed.expand(games, -1, -1), self.border(games)
        gap = below(splitmix64(keys, 0), len(self._gapped))
        offset = below(splitmix64(keys, 1), len(self._offsets)) + self._offsets.start
        blocks = self._gapped[gap]
        blocks[..., 1] += offset[:, None]
        return blocks, self.border(games)

    def _rule_rewards(self, reward, hit, victim):
        # magent2's rule "a attacks b" for either side: only enemies can be hit.
        return torch.where(hit, reward + self.attack_opponent_reward, reward)
