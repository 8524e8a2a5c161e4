"""G games as tensors: the one interface that training and evaluation play, served by two
backends.

``make_games(name, map_size, games, backend=...)`` builds one:

- ``"magent2"`` (the reference): ``EnvGames``, one ``GridEnv`` (magent2's engine) per game, its
  live agents spread over fixed slots; also serves ``consensus``'s ``ConsensusEnv``;
- ``"torch"``: ``TorchGames``, the torch games of ``torch_grid.py`` (battle, tiger-deer), all G
  games in one set of tensors on any device.

Every agent keeps one slot for the whole game: per group, the tensors have G rows (games) of n
slots (agents), a dead agent's slot stays, masked by ``alive``, its observation rows zeros. A game
that is over stays as it ended while the others play on (``step`` leaves it unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

from cmfq.envs.battle import BattleEnv
from cmfq.envs.gridworld import GridEnv, GroupSpec
from cmfq.envs.tiger_deer import TigerDeerEnv
from cmfq.envs.torch_battle import TorchBattle
from cmfq.envs.torch_grid import TorchGridWorld
from cmfq.envs.torch_tiger_deer import TorchTigerDeer

BACKENDS = ("magent2", "torch")
"""The env backends: magent2's engine (the reference) or the torch games."""

TORCH_GAMES: dict[str, tuple[type[TorchGridWorld], type[GridEnv]]] = {
    "battle": (TorchBattle, BattleEnv), "tiger-deer": (TorchTigerDeer, TigerDeerEnv),
}
"""The games the torch backend plays, with the magent2 env whose rules (``won``, ``symmetric``,
``opponents``) they share."""


class GroupState(NamedTuple):
    """One group of every game at one step; rows are games, columns the group's agent slots."""

    view: torch.Tensor
    """float32 [G, n, V, V, C] local views; zeros for the dead."""
    features: torch.Tensor
    """float32 [G, n, F]; zeros for the dead."""
    positions: torch.Tensor
    """long [G, n, 2] (x, y); the dead keep their last cell."""
    alive: torch.Tensor
    """bool [G, n]."""


class GamesStep(NamedTuple):
    """What ``Games.step`` returns."""

    groups: dict[str, GroupState]
    """Per group, the state after the step."""
    rewards: dict[str, torch.Tensor]
    """Per group, float32 [G, n]: the step's reward of each agent that acted; 0 for the others
    (dead before it, or in a game over before it)."""
    done: torch.Tensor
    """bool [G]: the game is over (``max_steps`` played, or a group wiped out)."""
    terminated: torch.Tensor
    """bool [G]: the game ended because a group was wiped out (nothing bootstraps)."""


class Games:
    """G games of one env as tensors on ``device``.

    Attributes: ``name``, ``map_size``, ``max_steps``, ``groups`` (the first is the side a learner
    plays), ``specs`` (name -> ``GroupSpec``), ``opponents``, ``symmetric`` (as ``GridEnv``'s),
    ``n_games``, ``device``. Use: ``reset(seeds)``, then ``step({g: actions})`` (long [G, n]; the
    dead's and the finished games' are ignored) until every game is ``done``.
    """

    name: str
    map_size: int
    max_steps: int
    groups: tuple[str, ...]
    specs: dict[str, GroupSpec]
    opponents: Mapping[str, str | None]
    symmetric: bool
    n_games: int
    device: torch.device

    def won(self, survivors: int, opponent_survivors: int) -> bool:
        """As ``GridEnv.won``."""
        raise NotImplementedError

    def reset(self, seeds: Sequence[int]) -> dict[str, GroupState]:
        """Start game j from ``seeds[j]`` (one seed per game)."""
        raise NotImplementedError

    def step(self, actions: Mapping[str, torch.Tensor]) -> GamesStep:
        raise NotImplementedError

    def _check_seeds(self, seeds: Sequence[int]) -> None:
        if len(seeds) != self.n_games:
            raise ValueError(f"{self.n_games} games need {self.n_games} seeds, got {len(seeds)}")


class EnvGames(Games):
    """The magent2 backend: one ``GridEnv`` per game (the reference), or any env of its interface
    (``ConsensusEnv``). The env removes its dead; here the survivors keep their slots (the env
    keeps their order)."""

    def __init__(self, envs: Sequence[GridEnv]) -> None:
        if not envs:
            raise ValueError("EnvGames needs at least one env")
        self.envs = list(envs)
        first = self.envs[0]
        self.name, self.map_size, self.max_steps = first.name, first.map_size, first.max_steps
        self.groups, self.specs = first.groups, first.specs
        self.opponents, self.symmetric = first.opponents, first.symmetric
        self.n_games = len(self.envs)
        self.device = torch.device("cpu")
        self._over = np.zeros(self.n_games, dtype=bool)
        self._terminated = np.zeros(self.n_games, dtype=bool)

    def won(self, survivors: int, opponent_survivors: int) -> bool:
        return self.envs[0].won(survivors, opponent_survivors)

    def reset(self, seeds: Sequence[int]) -> dict[str, GroupState]:
        self._check_seeds(seeds)
        first = [env.reset(seed) for env, seed in zip(self.envs, seeds, strict=True)]
        self._over[:] = self._terminated[:] = False
        # Slot i of a group is its i-th agent at the start; _slots[j][g] lists the live ones.
        self._slots = [{g: np.arange(len(obs[g].view)) for g in self.groups} for obs in first]
        n = {g: max(len(obs[g].view) for obs in first) for g in self.groups}
        self._state = {}
        for g in self.groups:
            spec = self.specs[g]
            state = GroupState(
                torch.zeros(self.n_games, n[g], *spec.view_shape),
                torch.zeros(self.n_games, n[g], spec.feature_dim),
                torch.zeros(self.n_games, n[g], 2, dtype=torch.long),
                torch.zeros(self.n_games, n[g], dtype=torch.bool),
            )
            for j, obs in enumerate(first):
                _put(state, j, self._slots[j][g], obs[g])
            self._state[g] = state
        return dict(self._state)

    def step(self, actions: Mapping[str, torch.Tensor]) -> GamesStep:
        rewards = {g: torch.zeros(s.alive.shape) for g, s in self._state.items()}
        # A new state each step: the caller keeps the last one.
        state = {g: GroupState(*(t.clone() for t in s)) for g, s in self._state.items()}
        for g in self.groups:
            if g not in actions:
                raise ValueError(f"no actions given for group {g!r}; every group must act")
        for j, env in enumerate(self.envs):
            if self._over[j]:
                continue
            slots = self._slots[j]
            result = env.step({g: actions[g][j, slots[g]].cpu().numpy() for g in self.groups})
            for g in self.groups:
                rewards[g][j, slots[g]] = torch.from_numpy(result.rewards[g])
                alive = result.alive[g]
                dead = slots[g][~alive]
                state[g].view[j, dead] = 0.0
                state[g].features[j, dead] = 0.0
                state[g].alive[j, dead] = False
                slots[g] = slots[g][alive]
                _put(state[g], j, slots[g], result.next_obs[g], rows=alive)
            self._over[j], self._terminated[j] = result.done, result.terminated
        self._state = state
        return GamesStep(dict(state), rewards, torch.from_numpy(self._over.copy()),
                         torch.from_numpy(self._terminated.copy()))


def _put(state: GroupState, game: int, slots: np.ndarray, obs, rows: np.ndarray | None = None
         ) -> None:
    """Write an env's observation of the agents in ``slots`` (its rows ``rows``, default all)
    into game ``game`` of ``state``."""
    pick = slice(None) if rows is None else rows
    state.view[game, slots] = torch.from_numpy(obs.view[pick])
    state.features[game, slots] = torch.from_numpy(obs.features[pick])
    state.positions[game, slots] = torch.from_numpy(obs.positions[pick]).long()
    state.alive[game, slots] = True


class TorchGames(Games):
    """The torch backend: battle or tiger-deer as one ``TorchGridWorld`` of G games.

    Game j draws its placement and attack orders from its seed alone, with counter-based draws
    for all games at once (``TorchGridWorld.reset_each``), so it is the same game alone or among
    others, on any device; not magent2's game of that seed (its draws differ), except for the
    placement where it is fixed (battle's default layout)."""

    def __init__(self, name: str, map_size: int, games: int, *, device: torch.device | str = "cpu",
                 compile: bool = False, id_embedding: bool = False, **options) -> None:
        if name not in TORCH_GAMES:
            raise ValueError(f"the torch backend plays {sorted(TORCH_GAMES)}, not {name!r}")
        if id_embedding:
            raise ValueError("the torch backend has no id embedding; use the magent2 backend")
        if games < 1:
            raise ValueError(f"games must be >= 1, got {games}")
        world_type, self._rules = TORCH_GAMES[name]
        self.world = world_type(map_size, device=device, compile=compile, **options)
        self.name, self.map_size, self.max_steps = name, map_size, self.world.max_steps
        self.groups = self.world.groups
        self.opponents, self.symmetric = self._rules.opponents, self._rules.symmetric
        self.n_games, self.device = games, self.world.device
        per = 3 if self.world.minimap_mode else 2
        self.specs = {}
        for k, g in enumerate(self.groups):
            r = int(self.world.kinds[g].view_radius)
            n_actions = self.world.n_actions[k]
            self.specs[g] = GroupSpec(
                g, (2 * r + 1, 2 * r + 1, 1 + per * len(self.groups)),
                n_actions + (3 if self.world.minimap_mode else 1), n_actions,
                float(r))

    def won(self, survivors: int, opponent_survivors: int) -> bool:
        # The magent2 env's rule; it reads no engine state.
        return self._rules.won(self, survivors, opponent_survivors)

    def reset(self, seeds: Sequence[int]) -> dict[str, GroupState]:
        self._check_seeds(seeds)
        self.world.reset_each(seeds)
        self._over = torch.zeros(self.n_games, dtype=torch.bool, device=self.device)
        return {g: self._group(g, obs) for g, obs in self.world.observe_all().items()}

    def step(self, actions: Mapping[str, torch.Tensor], order: torch.Tensor | None = None
             ) -> GamesStep:
        """``order``: the attack order (see ``TorchGridWorld.step_slots``), by default drawn."""
        result = self.world.step(actions, order, playing=~self._over)
        self._over = result.done
        return GamesStep({g: self._group(g, obs) for g, obs in result.next_obs.items()},
                         result.rewards, result.done, result.terminated)

    def _group(self, g: str, obs) -> GroupState:
        return GroupState(obs.view, obs.features, self.world.positions(g).clone(),
                          self.world.alive_mask(g).clone())


def make_games(name: str, map_size: int, games: int, *, backend: str = "magent2", seed: int = 0,
               device: torch.device | str = "cpu", **options) -> Games:
    """``games`` games of env ``name`` on ``backend`` (``BACKENDS``); ``options`` as
    ``cmfq.envs.make_env``'s. The magent2 backend runs on the CPU (``device`` is the torch
    backend's); ``seed`` is its envs' default seed (each ``reset`` gives the games' own)."""
    from cmfq.envs import make_env  # the registry of envs imports this module

    if backend not in BACKENDS:
        raise ValueError(f"unknown env backend {backend!r}; choose one of {BACKENDS}")
    if backend == "torch":
        return TorchGames(name, map_size, games, device=device, **options)
    return EnvGames([make_env(name, map_size, seed=seed, **options) for _ in range(games)])
