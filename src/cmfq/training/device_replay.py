"""The replay's ring on the training device, sampled there: a batch needs no host work and has
fixed shapes, so a CUDA graph can capture the gradient step with its sampling. The numpy
``ReplayBuffer``'s rows are copied there; a ``SlotReplay``'s, already there, are read as they
are."""

from __future__ import annotations

import numpy as np
import torch

from cmfq.algos.common import Batch
from cmfq.training.replay import ReplayBuffer
from cmfq.training.slot_replay import SlotReplay

DRAWS_PER_REFILL = 256
"""Batches' worth of random draws made in one call (a host-side refill between steps)."""


class DeviceReplay:
    """A copy of a ``ReplayBuffer``'s rows on ``device`` (or a ``SlotReplay``'s own rows, which
    are there), refreshed between rounds, and ``sample``, which draws ``batch_size`` transitions
    with torch ops alone.

    ``sample`` means what ``ReplayBuffer.sample`` means (uniform draws with replacement from the
    eligible transitions; s' of a terminal transition is itself; neighbours overwritten since are
    masked), with two differences. Its draws come from a torch generator, not numpy's, so a batch
    holds other transitions than the host sampler would draw from the same seed. And its shapes
    are fixed: the observations of a batch are its B rows of s and B rows of s' (then, with
    ``with_neighbors``, the B x K neighbours at s and at s'), not the distinct ones, which costs the
    network a few repeated rows and spares a data-dependent ``unique``. With ``distinct`` (an
    eager step on the CPU, which captures nothing) a batch holds the distinct ones, as the host's
    does: AMFQ's B x K neighbours repeat most of their rows, which the network would embed twice
    for each of them.

    Every tensor ``sample`` reads is allocated once and updated in place (``refresh`` and
    ``next_draw``), so a captured ``sample`` replays correctly; ``refresh`` returns True when it
    had to allocate anew (the first time, or the neighbour slots widened), after which a capture
    is stale. The random words are drawn ``DRAWS_PER_REFILL`` batches at a time into a buffer that
    ``sample`` reads at a counter kept on the device: the random number generator never runs
    inside the captured step.
    """

    def __init__(
        self, capacity: int, batch_size: int, device: torch.device, *, with_neighbors: bool,
        distinct: bool = False,
    ) -> None:
        self.capacity = capacity
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.with_neighbors = with_neighbors
        self.distinct = distinct
        self._rows: dict[str, torch.Tensor] = {}
        self._synced = 0  # the replay's rows written when last refreshed
        long = {"dtype": torch.int64, "device": self.device}
        self._eligible = torch.zeros(capacity, **long)
        self._count = torch.ones(1, **long)  # eligible transitions (>= 1 once refreshed)
        self._oldest = torch.zeros(1, **long)  # the oldest row id kept
        self._draws = torch.zeros(DRAWS_PER_REFILL, batch_size, **long)
        self._counter = torch.zeros(1, **long)  # the row of _draws the next sample reads
        self._drawn = DRAWS_PER_REFILL  # rows of _draws used (host-side count): refill first
        self._generator = torch.Generator(self.device)

    def refresh(self, replay: ReplayBuffer | SlotReplay) -> bool:
        """Take the rows ``replay`` wrote since the last refresh, and its eligible transitions.
        Call it between rounds (no stream half-way through a round). True if the rows are new
        tensors (allocated anew, or another replay's)."""
        if len(replay) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if replay.capacity != self.capacity:
            raise ValueError(f"replay capacity {replay.capacity} != {self.capacity}")
        fresh = self._share(replay) if isinstance(replay, SlotReplay) else self._copy(replay)
        eligible = replay.eligible_ids()
        if isinstance(eligible, np.ndarray):
            eligible = torch.from_numpy(eligible)
        self._eligible[: len(eligible)].copy_(eligible)
        self._count.fill_(len(eligible))
        self._oldest.fill_(max(0, replay.written - self.capacity))
        return fresh

    def _share(self, replay: SlotReplay) -> bool:
        """Read a slot replay's rows where they are (it writes them in place)."""
        where = replay.rows["action"].device  # a tensor's device has its index ("cuda:0")
        if where != self._eligible.device:
            raise ValueError(f"the replay is on {where}, its sampler on {self._eligible.device}")
        fresh = any(self._rows.get(name) is not t for name, t in replay.rows.items())
        self._rows = dict(replay.rows)
        return fresh

    def _copy(self, replay: ReplayBuffer) -> bool:
        """Copy the numpy replay's rows written since the last refresh."""
        source = replay.rows
        fresh = not self._rows or any(
            self._rows[name].shape != array.shape for name, array in source.items()
        )
        if fresh:
            self._rows = {
                name: torch.empty(array.shape, dtype=_torch_dtype(array), device=self.device)
                for name, array in source.items()
            }
            self._synced = 0
        first = max(self._synced, replay.written - self.capacity)
        for start, stop in _ring_slices(first, replay.written, self.capacity):
            for name, array in source.items():
                self._rows[name][start:stop].copy_(torch.from_numpy(array[start:stop]))
        # A row's s' link is written a step after the row itself, so the links are re-sent in
        # full (8 bytes a row) rather than tracked row by row.
        self._rows["next"].copy_(torch.from_numpy(source["next"]))
        self._synced = replay.written
        return fresh

    def seed(self, seed: int) -> None:
        """Restart the draws from ``seed``."""
        self._generator.manual_seed(seed)
        self._drawn = DRAWS_PER_REFILL

    def next_draw(self) -> None:
        """Make the next ``sample``'s random words ready: call it before each ``sample`` (outside
        a captured step); every ``DRAWS_PER_REFILL`` calls it draws a new buffer of them."""
        if self._drawn == DRAWS_PER_REFILL:
            self._draws.random_(0, 2**62, generator=self._generator)
            self._counter.zero_()
            self._drawn = 0
        self._drawn += 1

    def sample(self) -> Batch:
        """``batch_size`` transitions drawn uniformly (with replacement), as a ``Batch`` on the
        device; ``next_draw`` must come first."""
        words = self._draws.index_select(0, self._counter).squeeze(0)
        self._counter += 1
        return self.batch(self._eligible.index_select(0, words % self._count))

    def batch(self, ids: torch.Tensor) -> Batch:
        """The transitions of row ids ``ids`` (int64 [B] on the device, eligible ones)."""
        r, c, b = self._rows, self.capacity, len(ids)
        rows = ids % c
        done = r["done"][rows]
        next_ids = torch.where(done, ids, r["next"][rows])  # a terminal s' is never used
        next_rows = next_ids % c
        nbr, nbr_next = r["neighbors"][rows], r["neighbors"][next_rows]
        if self.with_neighbors:
            nbr = torch.where(nbr >= self._oldest, nbr, -1)  # overwritten since: masked
            nbr_next = torch.where(nbr_next >= self._oldest, nbr_next, -1)
            wanted = torch.cat([ids, next_ids, nbr.flatten(), nbr_next.flatten()])
        else:
            nbr, nbr_next = torch.full_like(nbr, -1), torch.full_like(nbr_next, -1)
            wanted = torch.cat([ids, next_ids])
        if self.distinct:
            valid = wanted >= 0
            unique, position = torch.unique(wanted[valid], return_inverse=True)
            index = torch.full_like(wanted, -1).masked_scatter_(valid, position)
            kept = unique % c
        else:
            kept = wanted.clamp(min=0) % c  # an empty slot reads row 0, which nothing indexes
            position = torch.arange(len(wanted), device=self.device)
            index = torch.where(wanted >= 0, position, -1)
        k = nbr.shape[1]
        if self.with_neighbors:
            nbr = index[2 * b: 2 * b + b * k].view(b, k)
            nbr_next = index[2 * b + b * k:].view(b, k)
        return Batch(
            view=r["view"][kept].float(),
            features=r["features"][kept],
            obs=index[:b],
            next_obs=index[b: 2 * b],
            action=r["action"][rows],
            reward=r["reward"][rows],
            done=done.float(),
            neighbor_input=r["neighbor_input"][rows],
            next_neighbor_input=r["neighbor_input"][next_rows],
            neighbors=nbr,
            neighbor_actions=r["neighbor_actions"][rows],
            next_neighbors=nbr_next,
            next_neighbor_actions=r["neighbor_actions"][next_rows],
        )


def _torch_dtype(array: np.ndarray) -> torch.dtype:
    return torch.from_numpy(array[:0]).dtype


def _ring_slices(first: int, stop: int, capacity: int) -> list[tuple[int, int]]:
    """The ring positions of row ids [first, stop) (stop - first <= capacity), as slices."""
    if first >= stop:
        return []
    start, end = first % capacity, (stop - 1) % capacity + 1
    return [(start, end)] if start < end else [(start, capacity), (0, end)]
