"""``tiger-deer``: tigers that must attack a deer in pairs to be rewarded; deer that wander."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import magent2

from cmfq.envs.gridworld import GridEnv
from cmfq.options import option

WALL_DENSITY = 0.04
"""Walls per cell of a tiger-deer map, as magent2's game."""
DEER_ATTACKED = -0.1
"""Reward of a deer each time a tiger attacks it, as magent2's game."""


@dataclass
class TigerDeerOptions:
    """tiger-deer's options: its fields of a run's config, its keyword arguments here."""

    SETTINGS: ClassVar[tuple[str, ...]] = (
        "tiger_density", "deer_density", "tiger_step_recover", "tiger_attack_reward")
    """The options that shape the game: how crowded the map is, what tigers live on and what they
    earn; an evaluation keeps them (the map size may change)."""

    n_tigers: int | None = option(
        None, "tiger-deer only: number of tigers (None: tiger_density * map_size^2, at least 2). "
        "Evaluation rebuilds the densities, not the counts.")
    n_deer: int | None = option(
        None, "tiger-deer only: number of deer (None: deer_density * map_size^2).")
    tiger_density: float = option(
        0.01, "tiger-deer only: tigers per cell when n_tigers is None (magent2's 0.01).")
    deer_density: float = option(
        0.05, "tiger-deer only: deer per cell when n_deer is None (magent2's 0.05).")
    tiger_step_recover: float = option(
        -0.1, "tiger-deer only: HP a tiger gains each step. magent2's -0.1 starves a tiger (10 HP) "
        "that eats no deer in 100 steps; 0: tigers never starve.")
    tiger_attack_reward: float = option(
        0.0, "tiger-deer only: reward of a tiger for each attack on a deer, alone or not "
        "(shaping). 0: magent2's game, which pays a tiger only when two attack the same deer in "
        "the same step.")


class TigerDeerEnv(GridEnv):
    """magent2's tiger-deer game with configurable counts.

    Tigers (10 HP, gain ``tiger_step_recover`` HP a step, view radius 4) get +1 each when two of
    them attack the same deer in the same step (the engine fires the +0.5 rule for both orders of
    the pair), and ``tiger_attack_reward`` for every attack on a deer, alone or not (0: magent2's
    game, which pays only the pair); a deer eaten restores 8 HP.
    Deer (5 HP) are meant to act at random (the rollout gives them a random policy). Walls cover
    ``wall_density`` of the map. A round ends after ``max_steps``, or when all tigers or all deer
    are dead (the deer gone is terminal). ``minimap_mode`` and ``id_embedding`` as in ``GridEnv``
    (minimap on, ids off). ``n_tigers`` and ``n_deer`` default to ``tiger_density * map_size**2``
    (at least 2) and ``deer_density * map_size**2``: magent2's 0.01 and 0.05 a cell.
    """

    name = "tiger-deer"
    options = TigerDeerOptions
    groups = ("tiger", "deer")
    opponents = {"tiger": "deer", "deer": None}

    def __init__(
        self,
        map_size: int,
        *,
        seed: int,
        max_steps: int = 300,
        n_tigers: int | None = TigerDeerOptions.n_tigers,
        n_deer: int | None = TigerDeerOptions.n_deer,
        tiger_density: float = TigerDeerOptions.tiger_density,
        deer_density: float = TigerDeerOptions.deer_density,
        wall_density: float = WALL_DENSITY,
        minimap_mode: bool = True,
        id_embedding: bool = False,
        tiger_step_recover: float = TigerDeerOptions.tiger_step_recover,
        deer_attacked: float = DEER_ATTACKED,
        tiger_attack_reward: float = TigerDeerOptions.tiger_attack_reward,
    ) -> None:
        self.n_tigers, self.n_deer, self.n_walls = tiger_deer_counts(
            map_size, n_tigers, n_deer, tiger_density, deer_density, wall_density)
        self.tiger_step_recover = tiger_step_recover
        self._deer_attacked = deer_attacked
        self.tiger_attack_reward = tiger_attack_reward
        super().__init__(map_size, seed=seed, max_steps=max_steps, minimap_mode=minimap_mode,
                         id_embedding=id_embedding)

    def _engine_group_names(self) -> tuple[str, ...]:
        return ("deer", "tiger")

    def _config(self) -> magent2.gridworld.Config:
        gw = magent2.gridworld
        cfg = self._base_config()
        deer = cfg.register_agent_type(
            "deer",
            {
                "width": 1, "length": 1, "hp": 5, "speed": 1,
                "view_range": gw.CircleRange(1), "attack_range": gw.CircleRange(0),
                "step_recover": 0.2, "kill_supply": 8, "dead_penalty": -1.0,
            },
        )
        tiger = cfg.register_agent_type(
            "tiger",
            {
                "width": 1, "length": 1, "hp": 10, "speed": 1,
                "view_range": gw.CircleRange(4), "attack_range": gw.CircleRange(1),
                "damage": 1, "step_recover": self.tiger_step_recover,
            },
        )
        deer_group, tiger_group = cfg.add_group(deer), cfg.add_group(tiger)
        a = gw.AgentSymbol(tiger_group, index="any")
        b = gw.AgentSymbol(tiger_group, index="any")
        c = gw.AgentSymbol(deer_group, index="any")
        attack_a, attack_b = gw.Event(a, "attack", c), gw.Event(b, "attack", c)
        # The pair event fires for both orders of (a, b), so each receives half twice.
        cfg.add_reward_rule(attack_a & attack_b, receiver=[a, b], value=[0.5, 0.5])
        cfg.add_reward_rule(attack_a, receiver=[c], value=[self._deer_attacked])
        if self.tiger_attack_reward:  # no rule at 0: the engine then runs magent2's own game
            cfg.add_reward_rule(attack_a, receiver=[a], value=[self.tiger_attack_reward])
        return cfg

    def _populate(self, seed: int) -> None:  # magent2 places them at random, from its seed
        self._engine.add_walls(method="random", n=self.n_walls)
        self._engine.add_agents(self._handles["deer"], method="random", n=self.n_deer)
        self._engine.add_agents(self._handles["tiger"], method="random", n=self.n_tigers)

    def _finished(self) -> bool:
        return self.num_alive("tiger") == 0 or self.num_alive("deer") == 0

    def won(self, survivors: int, opponent_survivors: int) -> bool:
        """The tigers ate every deer."""
        return opponent_survivors == 0


def tiger_deer_counts(
    map_size: int, n_tigers: int | None, n_deer: int | None, tiger_density: float,
    deer_density: float, wall_density: float,
) -> tuple[int, int, int]:
    """(tigers, deer, walls) of a map: the counts given, or the densities' (at least 2 tigers).
    Raises ValueError for a bad option or a map too small for them."""
    if map_size < 10:
        raise ValueError(f"tiger-deer needs map_size >= 10, got {map_size}")
    for name, density in (("tiger_density", tiger_density), ("deer_density", deer_density)):
        if not 0 < density < 1:
            raise ValueError(f"{name} must be in (0, 1), got {density}")
    n_tigers = max(2, int(tiger_density * map_size**2)) if n_tigers is None else n_tigers
    n_deer = int(deer_density * map_size**2) if n_deer is None else n_deer
    if n_tigers < 2:
        raise ValueError(f"tiger-deer needs n_tigers >= 2 (they hunt in pairs), got {n_tigers}")
    if n_deer < 1:
        raise ValueError(f"n_deer must be >= 1, got {n_deer}")
    if not 0 <= wall_density < 1:
        raise ValueError(f"wall_density must be in [0, 1), got {wall_density}")
    n_walls = int(wall_density * map_size**2)
    inner = (map_size - 2) ** 2
    if n_tigers + n_deer + n_walls > inner // 2:
        raise ValueError(
            f"map_size {map_size} is too small for {n_tigers} tigers, {n_deer} deer "
            f"and {n_walls} walls (they may fill at most half of the {inner} free cells)"
        )
    return n_tigers, n_deer, n_walls
