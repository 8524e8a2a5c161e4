"""``battle``: two equal armies of magent2's standard battle agents, in blocks facing each other."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import magent2
import numpy as np

from cmfq.envs.gridworld import GridEnv
from cmfq.options import option

KILL_REWARD = 5.0
"""Reward for a kill, as in magent2's battle."""
AGENT_DENSITY = 0.04
"""Agents a side per map cell, as in the original MFQ experiments (map 40 gives 64 a side)."""
LAYOUTS = ("fixed", "shifted")
"""Where the armies start: ``fixed``, the published layout of every game; ``shifted``, that layout
moved by a gap and a vertical offset drawn from each game's reset seed (``shifted_blocks``)."""
PUBLISHED_GAP = 3
"""Cells between the centre and each block in the published layout (the original MFQ code's)."""
SHIFTED_GAPS = (1, 6)
"""The gaps a shifted layout draws from, both ends included: from fronts 4 cells apart to 14, the
published 3 in between (an agent sees 6 cells around it)."""


@dataclass
class BattleOptions:
    """battle's options: its fields of a run's config, its keyword arguments here (magent2's
    battle defaults)."""

    SETTINGS: ClassVar[tuple[str, ...]] = (
        "step_reward", "dead_penalty", "attack_penalty", "attack_opponent_reward")
    """The options that shape what agents earn: an evaluation keeps them (the size may change)."""

    agents_per_side: int | None = option(
        None, "battle only: agents a side (None: 0.04 * map_size^2).")
    step_reward: float = option(-0.005, "battle only: reward of every agent each step.")
    dead_penalty: float = option(-0.1, "battle only: reward for dying.")
    attack_penalty: float = option(
        -0.1, "battle only: reward for any attack (wasted ones included).")
    attack_opponent_reward: float = option(
        0.2, "battle only: reward for attacking an enemy (a kill adds magent2's fixed +5).")
    layout: str = option(
        "fixed", "battle only: where the armies start. fixed: the published layout, two blocks "
        "left and right of the centre, in every game; shifted: those blocks moved apart or "
        "together and up or down, each game by a draw from its reset seed, mirror-symmetric "
        "(neither side is favoured).", choices=LAYOUTS)


class BattleEnv(GridEnv):
    """Red against blue; each agent has 10 HP, attacks for 2 HP, recovers 0.1 HP a step.

    Rewards are magent2's battle defaults: +5 a kill, +0.2 for attacking an enemy, -0.1 for any
    attack, -0.1 for dying, -0.005 a step. A round ends after ``max_steps`` or when a side is
    wiped out. ``agents_per_side`` defaults to ``0.04 * map_size**2``. The defaults are the
    original MFQ battle's: minimap on; the id embedding off (see ``GridEnv``).
    """

    name = "battle"
    options = BattleOptions
    groups = ("red", "blue")
    opponents = {"red": "blue", "blue": "red"}
    symmetric = True

    def __init__(
        self,
        map_size: int,
        *,
        seed: int,
        max_steps: int = 400,
        agents_per_side: int | None = BattleOptions.agents_per_side,
        minimap_mode: bool = True,
        id_embedding: bool = False,
        step_reward: float = BattleOptions.step_reward,
        dead_penalty: float = BattleOptions.dead_penalty,
        attack_penalty: float = BattleOptions.attack_penalty,
        attack_opponent_reward: float = BattleOptions.attack_opponent_reward,
        layout: str = BattleOptions.layout,
    ) -> None:
        n = battle_agents_per_side(map_size, agents_per_side)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self._rewards = dict(
            step_reward=step_reward,
            dead_penalty=dead_penalty,
            attack_penalty=attack_penalty,
            attack_opponent_reward=attack_opponent_reward,
        )
        self._blocks = block_positions(map_size, n)
        self.layout = layout
        self.agents_per_side = n
        super().__init__(map_size, seed=seed, max_steps=max_steps, minimap_mode=minimap_mode,
                         id_embedding=id_embedding)

    def _engine_group_names(self) -> tuple[str, ...]:
        return self.groups

    def _config(self) -> magent2.gridworld.Config:
        gw = magent2.gridworld
        cfg = self._base_config()
        small = cfg.register_agent_type(
            "small",
            {
                "width": 1,
                "length": 1,
                "hp": 10,
                "speed": 2,
                "view_range": gw.CircleRange(6),
                "attack_range": gw.CircleRange(1.5),
                "damage": 2,
                "kill_reward": KILL_REWARD,
                "step_recover": 0.1,
                "step_reward": self._rewards["step_reward"],
                "dead_penalty": self._rewards["dead_penalty"],
                "attack_penalty": self._rewards["attack_penalty"],
            },
        )
        red, blue = cfg.add_group(small), cfg.add_group(small)
        a, b = gw.AgentSymbol(red, index="any"), gw.AgentSymbol(blue, index="any")
        bonus = self._rewards["attack_opponent_reward"]
        cfg.add_reward_rule(gw.Event(a, "attack", b), receiver=a, value=bonus)
        cfg.add_reward_rule(gw.Event(b, "attack", a), receiver=b, value=bonus)
        return cfg

    def _populate(self, seed: int) -> None:
        blocks = self._blocks
        if self.layout == "shifted":
            blocks = shifted_blocks(self.map_size, self.agents_per_side, layout_rng(seed))
        for group, pos in zip(self.groups, blocks, strict=True):
            self._engine.add_agents(self._handles[group], method="custom", pos=pos)

    def won(self, survivors: int, opponent_survivors: int) -> bool:
        """More survivors than the other side."""
        return survivors > opponent_survivors


def battle_agents_per_side(map_size: int, agents_per_side: int | None) -> int:
    """Agents a side of a battle map: the count given, or AGENT_DENSITY's. Raises ValueError for
    a map under 12 cells a side or no agents."""
    if map_size < 12:
        raise ValueError(f"battle needs map_size >= 12, got {map_size}")
    n = int(AGENT_DENSITY * map_size**2) if agents_per_side is None else agents_per_side
    if n < 1:
        raise ValueError(f"agents_per_side must be >= 1, got {n}")
    return n


def block_positions(
    map_size: int, n: int, gap: int = PUBLISHED_GAP, offset: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Two blocks of ``n`` agents on every other cell, left and right of the centre.

    The layout of the original MFQ code (a square block of side ``2 * ceil(sqrt(n))`` cells, ``gap``
    cells from the centre); where that would cross the border, the blocks start at the borders.
    ``offset`` moves both blocks down (up where negative) from the middle row.
    Raises ValueError if the map cannot hold them.
    """
    cols, rows = _block_shape(n)
    side_x, side_y = 2 * cols, 2 * rows
    left_x0 = map_size // 2 - gap - side_x
    right_x0 = map_size // 2 + gap
    if left_x0 < 1:  # mirror a block at the left border instead
        left_x0 = 1
        right_x0 = map_size - side_x
    y0 = (map_size - side_y) // 2 + offset
    fits = (
        left_x0 + side_x - 2 < right_x0
        and right_x0 + side_x - 2 <= map_size - 2
        and y0 >= 1
        and y0 + side_y - 2 <= map_size - 2
    )
    if not fits:
        raise ValueError(
            f"map_size {map_size} is too small for {n} agents a side (two blocks of "
            f"{cols}x{rows} agents on every other cell); use a larger map or fewer agents"
        )
    grid = [(dx, dy) for dx in range(0, side_x, 2) for dy in range(0, side_y, 2)][:n]
    left = np.array([[left_x0 + dx, y0 + dy, 0] for dx, dy in grid], dtype=np.int32)
    right = np.array([[right_x0 + dx, y0 + dy, 0] for dx, dy in grid], dtype=np.int32)
    return left, right


def _block_shape(n: int) -> tuple[int, int]:
    """Columns and rows of agents in a block of ``n``."""
    cols = math.ceil(math.sqrt(n))
    return cols, math.ceil(n / cols)


def layout_rng(seed: int) -> np.random.Generator:
    """The generator of a shifted layout, drawn from a game's reset seed: a stream of its own,
    apart from the engine's and the teams' (``SeedSequence([seed, 0 or 1])``)."""
    return np.random.default_rng([int(seed), 0x6C61796F])


def shifted_choices(map_size: int, n: int) -> tuple[range | None, range]:
    """The gaps and the offsets a shifted layout draws from: the gaps of ``SHIFTED_GAPS`` the
    map holds (None where the published blocks already touch the borders, so that no gap moves
    them) and every offset whose rows the blocks fit in."""
    cols, rows = _block_shape(n)
    side_x, side_y = 2 * cols, 2 * rows
    widest = min(SHIFTED_GAPS[1], map_size // 2 - side_x - 1)  # the left block's x0 >= 1
    gaps = range(SHIFTED_GAPS[0], widest + 1) if widest >= SHIFTED_GAPS[0] else None
    y0 = (map_size - side_y) // 2
    return gaps, range(1 - y0, map_size - side_y - y0 + 1)


def shifted_blocks(
    map_size: int, n: int, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``block_positions`` with a gap and an offset each drawn uniformly from
    ``shifted_choices`` (the published gap where there is no choice). Both blocks move alike,
    away from the centre and up or down, so the layout stays mirror-symmetric about the map's
    middle column."""
    gaps, offsets = shifted_choices(map_size, n)
    gap = PUBLISHED_GAP if gaps is None else int(rng.integers(gaps.start, gaps.stop))
    offset = int(rng.integers(offsets.start, offsets.stop))
    return block_positions(map_size, n, gap, offset)
