"""A batched wrapper over magent2's raw ``GridWorld``: groups as arrays, not per-agent dicts."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import magent2
import numpy as np
from magent2.c_lib import _LIB

ID_EMBEDDING_SIZE = 10
"""Binary digits of the agent id in the features when ``id_embedding`` is on (magent2's)."""


class Observation(NamedTuple):
    """What one group sees at one step; row i of every array is the same agent.

    The arrays are copies: the engine reuses its buffers, so a kept view would change under you.
    """

    view: np.ndarray
    """float32 [n, H, W, C] local views (obstacles, own team, other team...)."""
    features: np.ndarray
    """float32 [n, F] the engine's feature vector (id embedding if on, last action, last reward,
    and with the minimap the agent's position as a fraction of the map)."""
    ids: np.ndarray
    """int32 [n] engine agent ids, unique within a round."""
    positions: np.ndarray
    """int32 [n, 2] grid coordinates (x, y)."""


class StepResult(NamedTuple):
    """The outcome of ``GridEnv.step`` for the agents that acted (same rows as the actions)."""

    next_obs: dict[str, Observation]
    """Per group, the observation after the step, read once the dead are removed (rows of dead
    agents are zeros). After a wipe-out, magent2's minimap channel of the empty group is 0 / 0,
    NaN, in the survivors' views (the torch games alike): those transitions are terminal, and a
    terminal s' is never read (``ReplayBuffer``)."""
    rewards: dict[str, np.ndarray]
    """Per group, float32 [n] reward of each agent for this step."""
    alive: dict[str, np.ndarray]
    """Per group, bool [n]: still alive after the step. The survivors keep their order, so
    ``next_obs[g]`` masked by ``alive[g]`` is exactly the next ``observe(g)``."""
    done: bool
    """True when the round is over (max steps reached, or a side is wiped out)."""
    terminated: bool
    """True when the round ended because a side was wiped out (battle) or the deer are gone
    (tiger-deer): the survivors' last transitions are terminal. A round cut by ``max_steps`` is
    not terminated: its survivors would have played on."""


@dataclass(frozen=True)
class GroupSpec:
    """Shapes of one group's observations and actions."""

    name: str
    view_shape: tuple[int, int, int]
    feature_dim: int
    n_actions: int
    view_radius: float


class GridEnv:
    """A magent2 ``GridWorld`` seen group by group, as numpy arrays.

    Attributes: ``name``, ``map_size``, ``max_steps``, ``groups`` (group names; the first is the
    side a learner plays), ``specs`` (name -> ``GroupSpec``), ``opponents`` (name -> the group
    whose deaths count as this group's kills, or None), ``step_count``.

    Use: ``reset(seed)``, then ``observe(g)`` and ``step({g: actions})`` until ``done``. After a
    step the dead are removed, so ``observe`` and ``positions`` describe the live agents; the step's
    ``alive[g]`` is the mask over the agents that acted in it.

    ``minimap_mode`` adds magent2's minimap: two view channels with the density of each team over
    the whole map (scaled to the view) and the agent's position in the features, so an agent knows
    where the enemy is beyond its view. ``id_embedding`` adds the agent's id in 10 binary features;
    off by default, since a larger map gives ids never seen in training.
    Subclasses define the engine config (``_config``) and where agents start (``_populate``).
    """

    name: str = ""
    options: type
    """The dataclass of the env's own options (its fields of a run's config); the keyword
    arguments beyond them are the common ``max_steps``, ``minimap_mode`` and ``id_embedding``."""

    def __init__(
        self, map_size: int, *, seed: int, max_steps: int, minimap_mode: bool, id_embedding: bool
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.map_size = map_size
        self.max_steps = max_steps
        self.seed = seed
        self.minimap_mode = bool(minimap_mode)
        self.id_embedding = bool(id_embedding)
        self._engine = magent2.GridWorld(self._config(), map_size=map_size)
        self._handles = dict(
            zip(self._engine_group_names(), self._engine.get_handles(), strict=True)
        )
        self.specs = {
            g: GroupSpec(
                name=g,
                view_shape=tuple(int(s) for s in self._engine.get_view_space(h)),
                feature_dim=int(self._engine.get_feature_space(h)[0]),
                n_actions=int(self._engine.get_action_space(h)[0]),
                view_radius=float(self._engine.get_view_space(h)[0] // 2),
            )
            for g, h in self._handles.items()
        }
        self.step_count = 0
        self._alive: dict[str, np.ndarray] = {}

    # --- what subclasses define -----------------------------------------------------------
    groups: tuple[str, ...] = ()
    opponents: Mapping[str, str | None] = {}
    symmetric: bool = False
    """Whether the groups are teams of one kind, so that a learner may play either side against
    an opponent team (battle); if not, a learner plays the first group and the others act at
    random (tiger-deer)."""

    def won(self, survivors: int, opponent_survivors: int) -> bool:
        """Whether a group that ended a round with ``survivors`` agents, its opponent group with
        ``opponent_survivors``, won it."""
        raise NotImplementedError

    def _engine_group_names(self) -> tuple[str, ...]:
        """Group names in the order the config adds the groups."""
        raise NotImplementedError

    def _config(self) -> magent2.gridworld.Config:
        raise NotImplementedError

    def _base_config(self) -> magent2.gridworld.Config:
        """The engine settings every env shares: map, minimap, id embedding, seed."""
        cfg = magent2.gridworld.Config()
        cfg.set({
            "map_width": self.map_size,
            "map_height": self.map_size,
            "minimap_mode": self.minimap_mode,
            "embedding_size": ID_EMBEDDING_SIZE if self.id_embedding else 0,
            "seed": self.seed % (2**31),
        })
        return cfg

    def _populate(self, seed: int) -> None:
        """Add the agents (and walls) of a new round started with ``seed``."""
        raise NotImplementedError

    # --- the API ----------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> dict[str, Observation]:
        """Start a round; ``seed`` (default: the env's seed) fixes the engine's randomness."""
        seed = int(self.seed if seed is None else seed)
        self._engine.set_seed(seed % (2**31))
        self._engine.reset()
        self._populate(seed)
        self.step_count = 0
        self._alive = {g: np.ones(self.num_alive(g), dtype=bool) for g in self.groups}
        return {g: self.observe(g) for g in self.groups}

    def observe(self, group: str) -> Observation:
        """The live agents' observations of ``group`` (copies)."""
        h = self._handle(group)
        if self.num_alive(group) == 0:
            # magent2 reads the first agent of the group it observes even when there is none
            # (its minimap code), which crashes now and then: a wiped-out group has no rows.
            spec = self.specs[group]
            return Observation(np.zeros((0, *spec.view_shape), np.float32),
                               np.zeros((0, spec.feature_dim), np.float32),
                               np.zeros(0, np.int32), np.zeros((0, 2), np.int32))
        view, features = self._engine.get_observation(h)
        return Observation(
            view.copy(), features.copy(), self._engine.get_agent_id(h), self._engine.get_pos(h)
        )

    def positions(self, group: str) -> np.ndarray:
        """int32 [n, 2] positions of the live agents of ``group``."""
        return self._engine.get_pos(self._handle(group))

    def num_alive(self, group: str) -> int:
        return self._engine.get_num(self._handle(group))

    def step(self, actions: Mapping[str, np.ndarray]) -> StepResult:
        """Apply one action per live agent of every group, advance one step, remove the dead."""
        for g in self.groups:
            if g not in actions:
                raise ValueError(f"no actions given for group {g!r}; every group must act")
            a = np.ascontiguousarray(actions[g], dtype=np.int32)
            n = self.num_alive(g)
            if a.shape != (n,):
                raise ValueError(
                    f"group {g!r} has {n} live agents but got actions of shape {a.shape}"
                )
            if n and (a.min() < 0 or a.max() >= self.specs[g].n_actions):
                raise ValueError(
                    f"actions of group {g!r} must lie in [0, {self.specs[g].n_actions}), "
                    f"got [{a.min()}, {a.max()}]"
                )
            self._engine.set_action(self._handle(g), a)
        self._engine.step()
        self.step_count += 1
        # The engine's order: rewards and alive masks, then clear the dead, then observe (the
        # features' last reward is only final once the step's rewards have been read).
        rewards = {g: self._engine.get_reward(self._handle(g)) for g in self.groups}
        self._alive = {g: self._engine.get_alive(self._handle(g)) for g in self.groups}
        self._engine.clear_dead()
        next_obs = {g: _scatter(self.observe(g), self._alive[g]) for g in self.groups}
        terminated = self._finished()
        done = terminated or self.step_count >= self.max_steps
        return StepResult(next_obs, rewards, dict(self._alive), done, terminated)

    # --- what a replay draws -------------------------------------------------------------
    def health(self, group: str) -> np.ndarray:
        """float32 [n] hit points of the live agents of ``group``, as a fraction of the maximum
        (rows as in ``positions``)."""
        view = self.observe(group).view
        centre = view.shape[1] // 2
        # Channel 2 of a view is the own group's HP; the agent itself is at its centre.
        return view[:, centre, centre, 2]

    def walls(self) -> np.ndarray:
        """int32 [m, 2] (x, y) cells of the walls, the map's border included."""
        # magent2's own _get_walls_info has room for 10,000 walls, too few for a large map: ask
        # the engine directly, with room for a wall on every cell (row 0 holds the count).
        rows = np.empty((self.map_size**2 + 1, 2), dtype=np.int32)
        as_int32 = rows.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        _LIB.env_get_info(self._engine.game, -1, b"walls_info", as_int32)
        return rows[1 : 1 + rows[0, 0]].copy()

    def attacks(self) -> np.ndarray:
        """int32 [m, 4] rows (x, y, target x, target y): the attacks of the last step by agents
        that survived it."""
        last = self.map_size - 1
        agents, events = self._engine._get_render_info((0, last), (0, last))
        rows = [(*agents[i][:2], x, y) for i, x, y in events if i in agents]
        return np.array(rows, dtype=np.int32).reshape(-1, 4)

    def _finished(self) -> bool:
        """A round also ends when a group that fights is wiped out."""
        return any(self.num_alive(g) == 0 for g in self.groups)

    def _handle(self, group: str):
        try:
            return self._handles[group]
        except KeyError:
            raise ValueError(f"unknown group {group!r}; this env has {self.groups}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(map_size={self.map_size}, max_steps={self.max_steps})"


def _scatter(survivors: Observation, alive: np.ndarray) -> Observation:
    """The survivors' observation over the rows of the agents that acted (zeros where dead)."""
    out = []
    for array in survivors:
        full = np.zeros((alive.shape[0], *array.shape[1:]), dtype=array.dtype)
        full[alive] = array
        out.append(full)
    return Observation(*out)
