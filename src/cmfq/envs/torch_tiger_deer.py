"""``tiger-deer`` on tensors: ``TigerDeerEnv``'s game for G games."""

from __future__ import annotations

import torch

from cmfq.envs.counter_rng import splitmix64
from cmfq.envs.tiger_deer import (
    DEER_ATTACKED,
    WALL_DENSITY,
    TigerDeerOptions,
    tiger_deer_counts,
)
from cmfq.envs.torch_grid import AgentKind, TorchGridWorld


class TorchTigerDeer(TorchGridWorld):
    """Tigers and deer as ``TigerDeerEnv`` (same options and defaults): walls, deer and tigers on
    distinct random cells of each game. Deer are magent2's group 0 (the channel order), but act
    after the tigers, as ``TigerDeerEnv`` hands magent2 the tigers' actions first."""

    name = "tiger-deer"
    groups = ("tiger", "deer")
    engine_order = ("deer", "tiger")

    def __init__(
        self,
        map_size: int,
        *,
        max_steps: int = 300,
        n_tigers: int | None = TigerDeerOptions.n_tigers,
        n_deer: int | None = TigerDeerOptions.n_deer,
        tiger_density: float = TigerDeerOptions.tiger_density,
        deer_density: float = TigerDeerOptions.deer_density,
        wall_density: float = WALL_DENSITY,
        minimap_mode: bool = True,
        tiger_step_recover: float = TigerDeerOptions.tiger_step_recover,
        deer_attacked: float = DEER_ATTACKED,
        tiger_attack_reward: float = TigerDeerOptions.tiger_attack_reward,
        device: torch.device | str = "cpu",
        compile: bool = False,
        threads: int | None = None,
    ) -> None:
        self.n_tigers, self.n_deer, self.n_walls = tiger_deer_counts(
            map_size, n_tigers, n_deer, tiger_density, deer_density, wall_density)
        self.minimap_mode = bool(minimap_mode)
        self.tiger_step_recover = tiger_step_recover
        self.deer_attacked = deer_attacked
        self.tiger_attack_reward = tiger_attack_reward
        deer = AgentKind(hp=5, speed=1, view_radius=1, attack_radius=0, step_recover=0.2,
                         kill_supply=8, dead_penalty=-1.0)
        tiger = AgentKind(hp=10, speed=1, view_radius=4, attack_radius=1, damage=1,
                          step_recover=tiger_step_recover)
        super().__init__(map_size, {"tiger": self.n_tigers, "deer": self.n_deer},
                         {"tiger": tiger, "deer": deer}, max_steps=max_steps, device=device,
                         compile=compile, threads=threads)

    def _place(self, keys):
        s, dev, games = self.map_size, self.device, len(keys)
        # the inner cells in a random order: sorted by their draws (equal ones by cell)
        draws = splitmix64(keys[:, None], torch.arange((s - 2) ** 2, device=dev))
        inner = draws.argsort(dim=1, stable=True)
        cells = inner[:, : self.n_walls + self.n_slots]
        xy = torch.stack([cells % (s - 2) + 1, cells // (s - 2) + 1], -1)
        walls = self.border(games)
        wx, wy = xy[:, : self.n_walls, 0], xy[:, : self.n_walls, 1]
        walls[torch.arange(games, device=dev)[:, None], wy, wx] = True
        return xy[:, self.n_walls :], walls

    def _rule_rewards(self, reward, hit, victim):
        tigers, deer = self.slices["tiger"], self.slices["deer"]
        hit_t, prey = hit[:, tigers], victim[:, tigers].clamp(min=0)
        # k[v]: tigers whose attack hit deer v without killing it (magent2's "attack" event)
        k = torch.zeros_like(victim).scatter_add(1, prey, hit_t.long())
        reward = reward.clone()
        # +0.5 to each of a and b for every ordered pair of tigers attacking the same deer
        pairs = torch.where(hit_t, 2 * (k.gather(1, prey) - 1), 0)
        r_t = reward[:, tigers]
        for m in range(2 * (self._max_hits - 1)):
            r_t = torch.where(m < pairs, r_t + 0.5, r_t)
        k_d = k[:, deer]
        r_d = reward[:, deer]
        for m in range(self._max_hits):
            r_d = torch.where(m < k_d, r_d + self.deer_attacked, r_d)
        if self.tiger_attack_reward:
            r_t = torch.where(hit_t, r_t + self.tiger_attack_reward, r_t)
        reward[:, tigers], reward[:, deer] = r_t, r_d
        return reward
