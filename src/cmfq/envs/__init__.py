"""Batched magent2 environments (``battle``, ``tiger-deer``), the ``consensus`` lattice game, and
agent neighbourhoods.

``make_env(name, map_size, seed=..., **options)`` builds one; see ``GridEnv`` for the API.
``make_games(name, map_size, games, backend=...)`` builds G games as tensors on either backend
(magent2's envs or the torch games); see ``cmfq.envs.games``.
"""

from __future__ import annotations

from cmfq.envs.battle import BattleEnv
from cmfq.envs.consensus import ConsensusEnv, ConsensusGames
from cmfq.envs.games import BACKENDS, EnvGames, Games, GamesStep, GroupState, TorchGames, make_games
from cmfq.envs.gridworld import GridEnv, GroupSpec, Observation, StepResult
from cmfq.envs.neighborhood import (
    neighbor_actions,
    neighborhoods,
    pad_neighbors,
    slot_neighborhoods,
)
from cmfq.envs.tiger_deer import TigerDeerEnv

ENVS: dict[str, type[GridEnv] | type[ConsensusEnv]] = {
    "battle": BattleEnv, "tiger-deer": TigerDeerEnv, "consensus": ConsensusEnv,
}
"""The envs by name; ``ConsensusEnv`` has ``GridEnv``'s interface without magent2's engine."""


def make_env(name: str, map_size: int, *, seed: int, **options) -> GridEnv:
    """A batched env by name: ``"battle"``, ``"tiger-deer"`` or ``"consensus"``.

    ``options`` go to the env's constructor (battle: ``max_steps``, ``agents_per_side``, reward
    terms; tiger-deer: ``max_steps``, ``n_tigers``, ``n_deer`` or their densities,
    ``tiger_step_recover``, ``tiger_attack_reward``...; consensus: ``consensus_actions``,
    ``informed_share``, ``target_switch``). The env has
    ``groups`` (names; the first is the side a learner controls), ``specs``, ``map_size``,
    ``reset(seed)``, ``observe(g)``, ``step({g: actions})``, and after each step ``positions(g)``
    (int32 [n, 2] of the live agents) and ``alive(g)`` (mask over the agents that acted).
    Raises ValueError for an unknown name or a bad config (e.g. a map too small for its agents).
    """
    if name not in ENVS:
        raise ValueError(f"unknown env {name!r}; choose one of {sorted(ENVS)}")
    if not isinstance(map_size, int) or isinstance(map_size, bool):
        raise TypeError(f"map_size must be an int, got {type(map_size).__name__}")
    try:
        return ENVS[name](map_size, seed=seed, **options)
    except TypeError as err:
        raise ValueError(f"bad option for env {name!r}: {err}") from None


__all__ = [
    "BACKENDS",
    "ENVS",
    "BattleEnv",
    "ConsensusEnv",
    "ConsensusGames",
    "EnvGames",
    "Games",
    "GamesStep",
    "GridEnv",
    "GroupSpec",
    "GroupState",
    "Observation",
    "StepResult",
    "TigerDeerEnv",
    "TorchGames",
    "make_env",
    "make_games",
    "neighbor_actions",
    "neighborhoods",
    "pad_neighbors",
    "slot_neighborhoods",
]
