"""Replay of one team's transitions, stored step by step so each observation is kept once."""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from cmfq.algos.common import Batch
from cmfq.algos.policy import Decision
from cmfq.envs import Observation

_FIELDS = ("view", "features", "neighbors", "neighbor_actions", "mean_action",
           "action", "reward", "alive")


class ReplayBuffer:
    """The last ``capacity`` transitions (s, a, x, r, s', x', done) of one team.

    A *frame* is the team at one step: its observations, neighbourhoods, the neighbour input x it
    acted with, and (except for a round's final frame) actions, rewards and who survived. The
    transition of agent i at step t reads s from frame t and s' from frame t + 1 (survivors keep
    their order), so every observation is stored once, and a sampled batch can also carry the
    neighbours' observations (AMFQ) at no extra storage. Views are kept as float16 (their values
    are 0/1 masks and HP fractions). Transitions of agents that died are kept with done = 1.
    """

    def __init__(self, capacity: int, n_actions: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.n_actions = n_actions
        self._frames: deque[dict[str, np.ndarray]] = deque()
        self._counts: deque[int] = deque()  # transitions per frame (0 for a final frame)
        self._size = 0
        self.added = 0
        """Transitions ever added (not capped by the capacity)."""

    def __len__(self) -> int:
        return self._size

    def add_step(
        self, obs: Observation, decision: Decision, reward: np.ndarray, alive: np.ndarray
    ) -> None:
        """Store one step of the team: what it saw and chose, and what followed."""
        n = obs.view.shape[0]
        self._append(obs, decision, np.asarray(decision.actions), reward, alive, count=n)

    def end_round(self, final_obs: Observation, decision: Decision) -> None:
        """Store the survivors' last observation (and neighbour input), the s' of the last step."""
        n = final_obs.view.shape[0]
        if n:
            self._append(final_obs, decision, np.zeros(n), np.zeros(n), np.ones(n, bool), count=0)

    def _append(self, obs, decision, action, reward, alive, count: int) -> None:
        self._frames.append({
            "view": obs.view.astype(np.float16),
            "features": obs.features.astype(np.float32),
            "neighbors": decision.neighbors.astype(np.int64),
            "neighbor_actions": decision.neighbor_actions.astype(np.int64),
            "mean_action": decision.mean_action.astype(np.float32),
            "action": np.asarray(action, dtype=np.int64),
            "reward": np.asarray(reward, dtype=np.float32),
            "alive": np.asarray(alive, dtype=bool),
        })
        self._counts.append(count)
        self._size += count
        self.added += count
        while self._size > self.capacity:
            self._frames.popleft()
            self._size -= self._counts.popleft()

    def sample(
        self, batch_size: int, rng: np.random.Generator, *, with_neighbors: bool = False
    ) -> Batch:
        """``batch_size`` transitions drawn uniformly (with replacement), as a ``Batch``."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        counts = np.fromiter(self._counts, dtype=np.int64, count=len(self._counts))
        ends = np.cumsum(counts)
        drawn = rng.integers(0, self._size, size=batch_size)
        frame_of = np.searchsorted(ends, drawn, side="right")
        row_of = drawn - (ends[frame_of] - counts[frame_of])

        rows: dict[tuple[int, int], int] = {}  # (frame, row) -> row of the batch's observations

        def ref(f: int, r: int) -> int:
            return rows.setdefault((f, r), len(rows))

        obs, next_obs, done, nbr, nbr_next = [], [], [], [], []
        action, reward, mean, next_mean, nbr_act, nbr_act_next = [], [], [], [], [], []
        for f, r in zip(frame_of.tolist(), row_of.tolist(), strict=True):
            frame = self._frames[f]
            alive = bool(frame["alive"][r])
            # A dead agent's s' is never used (done = 1): point at its own row.
            nf, nr = (f + 1, int(frame["alive"][: r + 1].sum()) - 1) if alive else (f, r)
            following = self._frames[nf]
            obs.append(ref(f, r))
            next_obs.append(ref(nf, nr))
            done.append(0.0 if alive else 1.0)
            action.append(frame["action"][r])
            reward.append(frame["reward"][r])
            mean.append(frame["mean_action"][r])
            next_mean.append(following["mean_action"][nr])
            nbr_act.append(frame["neighbor_actions"][r])
            nbr_act_next.append(following["neighbor_actions"][nr])
            if with_neighbors:
                nbr.append([ref(f, k) if k >= 0 else -1 for k in frame["neighbors"][r].tolist()])
                nbr_next.append(
                    [ref(nf, k) if k >= 0 else -1 for k in following["neighbors"][nr].tolist()]
                )
            else:
                nbr.append(np.full(frame["neighbors"].shape[1], -1))
                nbr_next.append(np.full(following["neighbors"].shape[1], -1))

        by_frame: dict[int, list[int]] = {}
        for (f, r) in rows:
            by_frame.setdefault(f, []).append(r)
        order = [(f, r) for f, rs in by_frame.items() for r in rs]
        position = np.empty(len(rows), dtype=np.int64)
        position[[rows[key] for key in order]] = np.arange(len(order))
        view = np.concatenate([self._frames[f]["view"][rs] for f, rs in by_frame.items()])
        features = np.concatenate([self._frames[f]["features"][rs] for f, rs in by_frame.items()])

        def index(values) -> torch.Tensor:
            arr = _pad([np.asarray(v, dtype=np.int64) for v in values])
            return torch.from_numpy(np.where(arr >= 0, position[np.clip(arr, 0, None)], -1))

        return Batch(
            view=torch.from_numpy(view.astype(np.float32)),
            features=torch.from_numpy(features),
            obs=torch.from_numpy(position[obs]),
            next_obs=torch.from_numpy(position[next_obs]),
            action=torch.tensor(np.array(action), dtype=torch.int64),
            reward=torch.tensor(np.array(reward), dtype=torch.float32),
            done=torch.tensor(done, dtype=torch.float32),
            mean_action=torch.from_numpy(np.stack(mean)),
            next_mean_action=torch.from_numpy(np.stack(next_mean)),
            neighbors=index(nbr),
            neighbor_actions=torch.from_numpy(_pad(nbr_act)),
            next_neighbors=index(nbr_next),
            next_neighbor_actions=torch.from_numpy(_pad(nbr_act_next)),
        )

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """Everything needed to restore the buffer, as tensors (loadable with weights_only)."""
        frames = list(self._frames)
        state: dict[str, torch.Tensor | int] = {
            "capacity": self.capacity,
            "n_actions": self.n_actions,
            "added": self.added,
            "counts": torch.tensor(list(self._counts), dtype=torch.int64),
            "sizes": torch.tensor([len(f["action"]) for f in frames], dtype=torch.int64),
            "widths": torch.tensor([f["neighbors"].shape[1] for f in frames], dtype=torch.int64),
        }
        for name in _FIELDS:
            if name in ("neighbors", "neighbor_actions"):
                parts = [f[name].ravel() for f in frames]  # widths differ in global mode
            else:
                parts = [f[name] for f in frames]
            state[name] = torch.from_numpy(np.concatenate(parts)) if parts else torch.empty(0)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.capacity, self.n_actions = int(state["capacity"]), int(state["n_actions"])
        self.added = int(state["added"])
        sizes, widths = state["sizes"].tolist(), state["widths"].tolist()
        arrays = {name: state[name].numpy() for name in _FIELDS}
        self._frames.clear()
        self._counts = deque(state["counts"].tolist())
        start = flat = 0
        for n, k in zip(sizes, widths, strict=True):
            frame = {}
            for name, arr in arrays.items():
                if name in ("neighbors", "neighbor_actions"):
                    frame[name] = arr[flat: flat + n * k].reshape(n, k).copy()
                else:
                    frame[name] = arr[start: start + n].copy()
            self._frames.append(frame)
            start, flat = start + n, flat + n * k
        self._size = sum(self._counts)


def _pad(rows: list[np.ndarray]) -> np.ndarray:
    """Stack rows of possibly different widths (global neighbourhoods), padding with -1."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
