"""Replay of teams' transitions in a ring of observations, each observation stored once."""

from __future__ import annotations

import numpy as np
import torch

from cmfq.algos.common import Batch
from cmfq.algos.policy import Decision
from cmfq.envs import Observation, pad_neighbors

_ROW_FIELDS = ("view", "features", "neighbor_input", "neighbors", "neighbor_actions", "action",
               "reward", "done", "next", "transition")
"""The per-row arrays (``neighbors`` and ``next`` hold row ids, see ``ReplayBuffer``)."""


class ReplayBuffer:
    """The last ``capacity`` observations of one or more teams, with their transitions.

    Row i of the ring holds what one agent saw at one step (its view, features, neighbour input x
    and neighbours) and, unless it is a round's last observation, the transition from it: the
    action, reward, done flag and the row of s'. Rows are named by ids that grow forever (row id
    ``g`` lives at ``g % capacity``), so a reference to a row that has been overwritten is simply
    an id older than the oldest kept. Each team that records is a *stream*: its step t + 1 gives
    the s' of its step-t survivors (they keep their order), so several teams can share a buffer.
    A batch can carry the neighbours' observations (AMFQ) at no extra storage. Views are kept as
    float16 (0/1 masks, densities and HP fractions). Deaths, and everyone's last step when a side
    is wiped out, are terminal (done = 1). Sampling is vectorised: no Python loop over a batch.
    """

    def __init__(self, capacity: int, n_actions: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.n_actions = n_actions
        self._rows: dict[str, np.ndarray] = {}  # allocated on the first step (shapes known then)
        self._written = 0  # rows ever written: the next row id
        self._pending: dict[object, tuple[np.ndarray, np.ndarray]] = {}  # stream -> (ids, alive)
        self._eligible: np.ndarray | None = None  # cached ids of sampleable transitions
        self.added = 0
        """Transitions ever added (not capped by the capacity)."""

    def __len__(self) -> int:
        return len(self.eligible_ids())

    @property
    def written(self) -> int:
        """Rows ever written: the id the next row gets (row id ``g`` lives at ``g % capacity``)."""
        return self._written

    @property
    def rows(self) -> dict[str, np.ndarray]:
        """The ring's per-row arrays by name (empty before the first step); read, do not write.
        ``neighbors`` and ``next`` hold row ids, -1 = none."""
        return self._rows

    def add_step(
        self, obs: Observation, decision: Decision, reward: np.ndarray, alive: np.ndarray, *,
        terminal: bool = False, stream: object = 0,
    ) -> None:
        """Store one step of a team: what it saw and chose, and what followed. ``terminal``: the
        round ended for good (a side wiped out), so no survivor bootstraps."""
        alive = np.asarray(alive, dtype=bool)
        ids = self._write(obs, decision, transition=True)
        self._link(stream, ids)
        rows = ids % self.capacity
        self._rows["action"][rows] = decision.actions
        self._rows["reward"][rows] = reward
        self._rows["done"][rows] = ~alive | terminal
        self.added += len(ids)
        self._pending[stream] = (ids, alive & (not terminal))

    def end_round(
        self, final_obs: Observation, decision: Decision | None = None, *, stream: object = 0
    ) -> None:
        """Close a stream's round: store the survivors' last observation (the s' of the last step)
        unless there is none to bootstrap from (``decision`` None, or no survivors)."""
        if decision is not None and final_obs.view.shape[0]:
            self._link(stream, self._write(final_obs, decision, transition=False))
        self._pending.pop(stream, None)

    def _link(self, stream: object, ids: np.ndarray) -> None:
        """Make the rows ``ids`` the s' of the stream's previous-step survivors."""
        if stream not in self._pending:
            return
        previous, survived = self._pending[stream]
        if survived.sum() != len(ids):
            raise ValueError(
                f"stream {stream!r}: {survived.sum()} agents survived the last step but "
                f"{len(ids)} observations follow; record each team as its own stream"
            )
        targets = previous[survived]
        kept = targets >= self._written - self.capacity  # rows not overwritten by these ids
        self._rows["next"][targets[kept] % self.capacity] = ids[kept]

    def _write(self, obs: Observation, decision: Decision, *, transition: bool) -> np.ndarray:
        n = obs.view.shape[0]
        self._allocate(obs, decision)
        ids = self._written + np.arange(n, dtype=np.int64)
        rows = ids % self.capacity
        r = self._rows
        # torch converts to float16 with the CPU's vector instructions, 30x numpy's speed.
        r["view"][rows] = torch.from_numpy(np.ascontiguousarray(obs.view)).half().numpy()
        r["features"][rows] = obs.features
        r["neighbor_input"][rows] = decision.neighbor_input
        width = r["neighbors"].shape[1]
        neighbors = pad_neighbors(decision.neighbors, width)
        their_actions = pad_neighbors(decision.neighbor_actions, width)
        r["neighbors"][rows] = np.where(neighbors >= 0, self._written + neighbors, -1)
        r["neighbor_actions"][rows] = their_actions
        r["next"][rows] = -1
        r["transition"][rows] = transition
        self._written += n
        self._eligible = None
        return ids

    def _allocate(self, obs: Observation, decision: Decision) -> None:
        width = max(decision.neighbors.shape[1], 1)
        if self._rows and self._rows["neighbors"].shape[1] >= width:
            return
        if self._rows:  # global neighbourhoods of a larger team: widen the stored rows
            for name in ("neighbors", "neighbor_actions"):
                self._rows[name] = pad_neighbors(self._rows[name], width)
            return
        c = self.capacity
        self._rows = {
            "view": np.zeros((c, *obs.view.shape[1:]), np.float16),
            "features": np.zeros((c, obs.features.shape[1]), np.float32),
            "neighbor_input": np.zeros((c, self.n_actions), np.float32),
            "neighbors": np.full((c, width), -1, np.int64),
            "neighbor_actions": np.full((c, width), -1, np.int64),
            "action": np.zeros(c, np.int64),
            "reward": np.zeros(c, np.float32),
            "done": np.ones(c, bool),
            "next": np.full(c, -1, np.int64),
            "transition": np.zeros(c, bool),
        }

    def eligible_ids(self) -> np.ndarray:
        """Ids of the kept transitions whose s' is known (or that are terminal)."""
        if self._eligible is None:
            oldest = max(0, self._written - self.capacity)
            ids = np.arange(oldest, self._written, dtype=np.int64)
            if self._rows:
                rows = ids % self.capacity
                r = self._rows
                ok = r["transition"][rows] & (r["done"][rows] | (r["next"][rows] >= 0))
                ids = ids[ok]
            self._eligible = ids
        return self._eligible

    def sample(
        self, batch_size: int, rng: np.random.Generator, *, with_neighbors: bool = False
    ) -> Batch:
        """``batch_size`` transitions drawn uniformly (with replacement), as a ``Batch``."""
        eligible = self.eligible_ids()
        if len(eligible) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        ids = eligible[rng.integers(0, len(eligible), size=batch_size)]
        return self.batch(ids, with_neighbors=with_neighbors)

    def batch(self, ids: np.ndarray, *, with_neighbors: bool = False) -> Batch:
        """The transitions of row ids ``ids`` (from ``eligible_ids``) as a ``Batch``; its
        observations are the distinct ones of s, s' (and the neighbours')."""
        r, c = self._rows, self.capacity
        oldest = max(0, self._written - c)
        batch_size = len(ids)
        rows = ids % c
        done = r["done"][rows]
        next_ids = np.where(done, ids, r["next"][rows])  # a terminal s' is never used
        next_rows = next_ids % c
        nbr, nbr_next = r["neighbors"][rows], r["neighbors"][next_rows]
        if with_neighbors:
            nbr = np.where(nbr >= oldest, nbr, -1)  # a neighbour overwritten since: masked
            nbr_next = np.where(nbr_next >= oldest, nbr_next, -1)
            wanted = np.concatenate([ids, next_ids, nbr.ravel(), nbr_next.ravel()])
        else:
            nbr, nbr_next = np.full_like(nbr, -1), np.full_like(nbr_next, -1)
            wanted = np.concatenate([ids, next_ids])
        unique, position = np.unique(wanted[wanted >= 0], return_inverse=True)
        index = np.full(wanted.shape, -1, np.int64)
        index[wanted >= 0] = position
        b, k = batch_size, nbr.shape[1]
        obs, next_obs = index[:b], index[b: 2 * b]
        if with_neighbors:
            nbr = index[2 * b: 2 * b + b * k].reshape(b, k)
            nbr_next = index[2 * b + b * k:].reshape(b, k)
        kept = unique % c
        return Batch(
            view=torch.from_numpy(r["view"][kept]).float(),
            features=torch.from_numpy(r["features"][kept]),
            obs=torch.from_numpy(obs),
            next_obs=torch.from_numpy(next_obs),
            action=torch.from_numpy(r["action"][rows]),
            reward=torch.from_numpy(r["reward"][rows]),
            done=torch.from_numpy(done.astype(np.float32)),
            neighbor_input=torch.from_numpy(r["neighbor_input"][rows]),
            next_neighbor_input=torch.from_numpy(r["neighbor_input"][next_rows]),
            neighbors=torch.from_numpy(nbr),
            neighbor_actions=torch.from_numpy(r["neighbor_actions"][rows]),
            next_neighbors=torch.from_numpy(nbr_next),
            next_neighbor_actions=torch.from_numpy(r["neighbor_actions"][next_rows]),
        )

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """The kept rows, oldest first, as tensors (loadable with weights_only)."""
        oldest = max(0, self._written - self.capacity)
        rows = np.arange(oldest, self._written) % self.capacity
        state: dict[str, torch.Tensor | int] = {
            "capacity": self.capacity, "n_actions": self.n_actions, "added": self.added,
            "written": self._written,
        }
        for name, array in self._rows.items():
            state[name] = torch.from_numpy(array[rows].copy())
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a buffer saved between rounds (no stream is half-way through a round)."""
        self.capacity, self.n_actions = int(state["capacity"]), int(state["n_actions"])
        self.added, self._written = int(state["added"]), int(state["written"])
        self._pending, self._eligible, self._rows = {}, None, {}
        if "view" not in state:
            return
        if "mean_action" in state:  # saved when the neighbour input was called the mean action
            state = {**state, "neighbor_input": state["mean_action"]}
        saved = {name: state[name].numpy() for name in _ROW_FIELDS}
        first = saved["view"].shape[0]
        rows = np.arange(self._written - first, self._written) % self.capacity
        for name, array in saved.items():
            fill = -1 if name in ("neighbors", "neighbor_actions", "next") else 0
            self._rows[name] = np.full((self.capacity, *array.shape[1:]), fill, array.dtype)
            self._rows[name][rows] = array

