"""Each agent's neighbourhood: the nearest live teammates within a radius, as index arrays
(``neighborhoods``: one team's live agents in numpy) or over the slots of G games at once
(``slot_neighborhoods``: torch, on any device)."""

from __future__ import annotations

import math

import numpy as np
import torch

ALL_PAIRS_MAX = 512
"""Teams up to this size compare all pairs (an n x n table, 2 MB at 512): at battle's sizes that
is several times faster than the grid's bookkeeping, and it gives the same neighbours."""
_NONE = np.iinfo(np.int64).max


def neighborhoods(positions: np.ndarray, *, radius: float | None, k_max: int) -> np.ndarray:
    """Indices of each agent's neighbours among the same ``positions``; -1 pads.

    ``radius=None`` gives the whole team ("global", as in the original MFQ code): every other agent,
    in index order, and ``k_max`` is ignored. Otherwise the ``k_max`` nearest other agents within
    Euclidean distance ``radius`` (inclusive), nearest first, ties broken by index; the result is
    int64 ``[n, k_max]``, so its width does not depend on the team size.

    Vectorised: up to ``ALL_PAIRS_MAX`` agents over all pairs; beyond, over a grid of the integer
    positions, where each agent looks only at the cells within ``radius`` of its own, so the cost
    is O(n * radius^2) and memory O(extent^2 + n * radius^2).
    """
    positions = np.asarray(positions)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must have shape [n, 2], got {positions.shape}")
    n = positions.shape[0]
    if radius is None:
        others = np.broadcast_to(np.arange(n), (n, n))
        return others[~np.eye(n, dtype=bool)].reshape(n, max(n - 1, 0)).astype(np.int64)
    limit = _squared_limit(radius, k_max)
    out = np.full((n, k_max), -1, dtype=np.int64)
    if n <= 1:
        return out
    if n <= ALL_PAIRS_MAX:
        return _nearest_of_all_pairs(positions, limit, k_max)
    reach = int(np.floor(np.sqrt(limit)))
    pos = positions.astype(np.int64) - positions.min(0) + reach
    height = int(pos[:, 1].max()) + reach + 1
    cell = pos[:, 0] * height + pos[:, 1]
    # Several agents may share a cell: the l-th agent of a cell goes to layer l of the grid.
    order = np.argsort(cell, kind="stable")
    first = np.searchsorted(cell[order], cell[order])
    layer = np.empty(n, dtype=np.int64)
    layer[order] = np.arange(n) - first
    grid = np.full((int(layer.max()) + 1, (int(pos[:, 0].max()) + reach + 1) * height), -1)
    grid[layer, cell] = np.arange(n)

    dx, dy = np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1), indexing="ij")
    d2 = (dx**2 + dy**2).ravel()
    near = d2 <= limit
    offsets, d2 = (dx.ravel() * height + dy.ravel())[near], d2[near]
    candidates = grid[:, cell[:, None] + offsets[None, :]]  # [layers, n, cells]
    candidates = candidates.transpose(1, 0, 2).reshape(n, -1)
    dist = np.tile(d2, grid.shape[0])[None, :]
    valid = (candidates >= 0) & (candidates != np.arange(n)[:, None])
    key = np.where(valid, dist * n + candidates, np.iinfo(np.int64).max)
    k = min(k_max, key.shape[1])
    nearest = np.argpartition(key, k - 1, axis=1)[:, :k]
    nearest = np.take_along_axis(nearest, np.argsort(np.take_along_axis(key, nearest, 1), 1), 1)
    out[:, :k] = np.where(
        np.take_along_axis(valid, nearest, 1), np.take_along_axis(candidates, nearest, 1), -1
    )
    return out


SLOT_PAIRS_MAX = 1 << 24
"""Pairs of slots ``slot_neighborhoods`` compares at once (its int64 keys take 128 MiB); more
games than fit are taken a chunk at a time."""


def slot_neighborhoods(positions: torch.Tensor, alive: torch.Tensor, *, radius: float | None,
                       k_max: int) -> torch.Tensor:
    """``neighborhoods`` for one group of G games at once, over its slots: long [G, n, K], the
    slot of each neighbour, -1 pads; every game's live agents get, in slot terms, exactly what
    ``neighborhoods`` gives for them alone (its rows are the live agents in slot order). A dead
    slot's row is all -1, and it is no one's neighbour.

    ``positions``: long [G, n, 2]; ``alive``: bool [G, n], on any device (the result is there).
    ``radius=None``: every other live agent in slot order, K = n - 1; otherwise the ``k_max``
    nearest live agents within Euclidean ``radius`` (inclusive), nearest first, ties broken by
    slot, K = ``k_max``.

    All pairs of a game's slots, with no loop over games or agents: the key d² * n + j orders a
    row by distance, then by slot, and gives j back. Memory: a few [G, n, n] int64 tensors, so
    games are taken ``SLOT_PAIRS_MAX // n²`` at a time (all of 4,096 games of 64 slots at once).
    """
    if positions.dim() != 3 or positions.shape[2] != 2 or alive.shape != positions.shape[:2]:
        raise ValueError(f"positions must be [G, n, 2] and alive [G, n], got "
                         f"{tuple(positions.shape)} and {tuple(alive.shape)}")
    limit = None if radius is None else _squared_limit(radius, k_max)
    games, n = alive.shape
    width = max(n - 1, 0) if radius is None else k_max
    chunk = max(1, SLOT_PAIRS_MAX // max(n * n, 1))
    if games <= chunk:
        return _nearest_slots(positions, alive, limit, width)
    return torch.cat([
        _nearest_slots(positions[s:s + chunk], alive[s:s + chunk], limit, width)
        for s in range(0, games, chunk)
    ])


def _squared_limit(radius: float, k_max: int) -> int:
    """The largest squared distance within ``radius``: integer squared distances make "within"
    exact. Raises ValueError for a negative ``radius`` or a ``k_max`` below 1."""
    if k_max < 1:
        raise ValueError(f"k_max must be >= 1, got {k_max}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return math.floor(radius**2 + 1e-9)


def neighbor_actions(neighbors: np.ndarray, prev_actions: np.ndarray | None) -> np.ndarray:
    """Previous-step actions of the neighbours (``-1`` where masked or at a round's first step)."""
    if prev_actions is None or neighbors.size == 0:
        return np.full(neighbors.shape, -1, dtype=np.int64)
    prev = np.asarray(prev_actions, dtype=np.int64)
    return np.where(neighbors >= 0, prev[np.clip(neighbors, 0, None)], -1)


def pad_neighbors(indices: np.ndarray, width: int) -> np.ndarray:
    """Neighbour rows padded with -1 to ``width`` columns (global neighbourhoods vary in width)."""
    if indices.shape[1] >= width:
        return indices
    out = np.full((indices.shape[0], width), -1, dtype=np.int64)
    out[:, : indices.shape[1]] = indices
    return out


def _nearest_of_all_pairs(positions: np.ndarray, limit: int, k_max: int) -> np.ndarray:
    """``neighborhoods`` over all pairs: sorting the key d² * n + j orders each row's neighbours
    by distance, then by index, and the key gives j back."""
    n = positions.shape[0]
    x, y = (positions[:, i].astype(np.int64) for i in (0, 1))
    dx, dy = x[:, None] - x, y[:, None] - y
    d2 = dx * dx + dy * dy
    key = d2 * n + np.arange(n)
    key[d2 > limit] = _NONE
    np.fill_diagonal(key, _NONE)
    k = min(k_max, n)
    nearest = np.sort(key, axis=1)[:, :k]
    out = np.full((n, k_max), -1, dtype=np.int64)
    out[:, :k] = np.where(nearest != _NONE, nearest % n, -1)
    return out


def _nearest_slots(positions: torch.Tensor, alive: torch.Tensor, limit: int | None, width: int
                   ) -> torch.Tensor:
    """``slot_neighborhoods`` of some games, within squared distance ``limit`` (None: any)."""
    games, n = alive.shape
    slot = torch.arange(n, device=alive.device)
    pair = alive[:, :, None] & alive[:, None, :] & (slot[:, None] != slot)
    key = slot.expand(games, n, n)
    if limit is not None:
        x, y = positions.long().unbind(2)
        dx, dy = x[:, :, None] - x[:, None, :], y[:, :, None] - y[:, None, :]
        d2 = dx * dx + dy * dy
        pair &= d2 <= limit
        key = d2 * n + slot
    key = torch.where(pair, key, _NONE)
    k = min(width, n)
    nearest = key.topk(k, dim=2, largest=False).values  # sorted, ascending
    out = torch.full((games, n, width), -1, dtype=torch.long, device=alive.device)
    out[:, :, :k] = torch.where(nearest != _NONE, nearest % n, -1)
    return out
