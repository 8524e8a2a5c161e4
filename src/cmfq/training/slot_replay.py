"""The replay of training on tensors: whole steps of the games' slots, kept on the games' device
and written there each step (``tensor_rollout.play_on_tensors``), with no copy to the host."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from cmfq.algos.policy import GroupDecision
from cmfq.envs import GamesStep, GroupState

ROW_FIELDS = ("view", "features", "neighbor_input", "neighbors", "neighbor_actions", "action",
              "reward", "done", "next", "transition")
"""The per-row tensors, named and meant as ``ReplayBuffer.rows``'s arrays."""


class SlotReplay:
    """The last steps of one or more recorded teams, as ``ReplayBuffer`` keeps them but on
    ``device``, and laid out by slot: a ring of entries, one per step of a round, each a block of
    R x n rows, row r * n + i of it slot i of the round's stream r (a recorded (game, group),
    ``begin_round``). Rows are named by ids that grow forever, as ``ReplayBuffer``'s: entry E's
    block holds ids E * R * n .. (E + 1) * R * n - 1, at id % ``capacity``; so the fields mean what
    ``ReplayBuffer.rows`` means (``next`` and ``neighbors`` hold row ids, -1 = none) and
    ``DeviceReplay`` samples either alike.

    An entry holds every slot of the step's state, alive or not, and a row is a transition where
    its agent acted (alive in a game that played the step): its action, reward and done flag
    (it died, or a side was wiped out: nothing bootstraps) and, where it survived, the row of s',
    the same slot at the next entry. A game that ended by its time limit is written once more
    (the entry after its last step, no transitions): the survivors' last observation and the
    neighbour input they would act with, the s' of their last step. A game's observations are
    written as zeros from then on, and from its wipe-out on (whose minimap is 0 / 0, NaN, in the
    survivors' views, ``GridEnv.step``), so that every row of the ring is finite. So the
    transitions are the numpy buffer's, with the same terminal and time-limit rules
    (``tests/test_slot_replay.py``).
    A neighbour's row is in the same entry as the agent's, and s' in the next: while a
    transition is kept, so are they, and ``ReplayBuffer``'s rule (neighbours overwritten since are
    masked) never has to mask anything here. Entries never span rounds: a round's last entry holds
    no transitions.

    ``capacity`` asks for that many rows; the ring holds ``capacity // (R * n)`` whole entries,
    at least two, once the first round fixes R and n (``capacity`` is then its rows). The rows of
    dead agents and finished games take their room: the ring holds fewer transitions than a
    ``ReplayBuffer`` of the same rows. Views are kept as float16, as there.
    """

    def __init__(self, capacity: int, n_actions: int, device: torch.device | str) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.n_actions = n_actions
        self.device = torch.device(device)
        self._rows: dict[str, torch.Tensor] = {}  # allocated on the first step (shapes known then)
        self._entries = 0  # entries ever written
        self._block = 0  # rows an entry takes: R * n
        self._slots = 0  # n
        self._streams: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # group -> (games, r)
        self._closing: torch.Tensor | None = None  # games that ended by their time limit
        self._added = torch.zeros((), dtype=torch.int64, device=self.device)

    def __len__(self) -> int:
        return len(self.eligible_ids())

    @property
    def written(self) -> int:
        """Rows ever written: the id the next row gets."""
        return self._entries * self._block

    @property
    def added(self) -> int:
        """Transitions ever added (reads the device)."""
        return int(self._added)

    @property
    def rows(self) -> dict[str, torch.Tensor]:
        """The ring's per-row tensors by name (``ROW_FIELDS``; empty before the first step)."""
        return self._rows

    def begin_round(self, streams: Sequence[tuple[int, str]], slots: int) -> None:
        """Record these (game, group) streams of the coming round, each of ``slots`` slots; a
        round's entries are their R blocks of n rows in this order. R * n is fixed for good by the
        first round."""
        if not streams:
            raise ValueError("a round records at least one stream")
        block = len(streams) * slots
        if self._block and block != self._block:
            raise ValueError(f"a round of {len(streams)} streams of {slots} slots does not fit "
                             f"the ring's entries of {self._block} rows")
        self._block, self._slots = block, slots
        by_group: dict[str, tuple[list[int], list[int]]] = {}
        for r, (game, group) in enumerate(streams):
            games, positions = by_group.setdefault(group, ([], []))
            games.append(game)
            positions.append(r)
        self._streams = {
            group: (torch.tensor(games, device=self.device),
                    torch.tensor(positions, device=self.device))
            for group, (games, positions) in by_group.items()
        }
        self._closing = None

    def add_step(
        self, state: Mapping[str, GroupState], decisions: Mapping[str, GroupDecision],
        result: GamesStep, playing: torch.Tensor,
    ) -> None:
        """Write the entry of one step: the state ``state`` the groups acted on, their
        ``decisions``, and what followed (``result``) for the games ``playing`` (bool [G]: not
        over before the step)."""
        rows = self._write(state, decisions, playing if self._closing is None
                           else playing | self._closing)
        for group, (games, positions) in self._streams.items():
            acted = (state[group].alive.index_select(0, games)
                     & playing.index_select(0, games)[:, None])
            alive = result.groups[group].alive.index_select(0, games)
            done = ~alive | result.terminated.index_select(0, games)[:, None]
            ids = (self._entries - 1) * self._block + self._row_ids(positions)
            next_ids = torch.where(acted & ~done, ids + self._block, -1)
            for name, value in (("transition", acted), ("done", done), ("next", next_ids),
                                ("action", decisions[group].actions.index_select(0, games)),
                                ("reward", result.rewards[group].index_select(0, games))):
                rows[name].index_copy_(0, positions, value)
            self._added += acted.sum()
        self._closing = result.done & ~result.terminated & playing

    def end_round(self, state: Mapping[str, GroupState], decisions: Mapping[str, GroupDecision]
                  ) -> None:
        """Write the round's last entry: the final state and the decisions on it, no
        transitions (the s' of the time-limited games' last step)."""
        if self._closing is None:
            raise ValueError("end_round closes a round of at least one add_step")
        self._write(state, decisions, self._closing)
        self._closing = None

    def _write(self, state: Mapping[str, GroupState], decisions: Mapping[str, GroupDecision],
               observed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Write an entry's observations (zeros but in the games ``observed``, bool [G]) and
        decisions, no transitions; returns its block of each field, [R, n, ...] views into the
        ring."""
        self._allocate(state, decisions)
        first = (self._entries % (self.capacity // self._block)) * self._block
        base = self._entries * self._block
        rows = {name: t[first:first + self._block].view(-1, self._slots, *t.shape[1:])
                for name, t in self._rows.items()}
        rows["transition"].zero_()
        width = self._rows["neighbors"].shape[1]
        for group, (games, positions) in self._streams.items():
            decided = decisions[group]
            slots = _pad(decided.neighbors.index_select(0, games), width)
            row_of_slot = base + positions[:, None, None] * self._slots
            seen = observed.index_select(0, games)
            view, features = (t.index_select(0, games) for t in state[group][:2])
            for name, value in (
                ("view", torch.where(seen[:, None, None, None, None], view, 0.0).half()),
                ("features", torch.where(seen[:, None, None], features, 0.0)),
                ("neighbor_input", decided.neighbor_input.index_select(0, games)),
                ("neighbors", torch.where(slots >= 0, row_of_slot + slots, -1)),
                ("neighbor_actions", _pad(decided.neighbor_actions.index_select(0, games), width)),
            ):
                rows[name].index_copy_(0, positions, value.to(rows[name].dtype))
        self._entries += 1
        return rows

    def _row_ids(self, positions: torch.Tensor) -> torch.Tensor:
        """long [r, n]: the offsets in an entry's block of the slots of streams ``positions``."""
        slot = torch.arange(self._slots, device=self.device)
        return positions[:, None] * self._slots + slot

    def _allocate(self, state: Mapping[str, GroupState], decisions: Mapping[str, GroupDecision]
                  ) -> None:
        if not self._streams:
            raise ValueError("begin_round first: the replay does not know its streams")
        width = max(max(decisions[g].neighbors.shape[2] for g in self._streams), 1)
        if self._rows:
            if width > self._rows["neighbors"].shape[1]:
                raise ValueError(f"decisions of {width} neighbours do not fit the replay's "
                                 f"{self._rows['neighbors'].shape[1]}")
            return
        entries = max(2, self.capacity // self._block)
        self.capacity = c = entries * self._block
        some = state[next(iter(self._streams))]
        on = {"device": self.device}
        self._rows = {
            "view": torch.zeros(c, *some.view.shape[2:], dtype=torch.float16, **on),
            "features": torch.zeros(c, some.features.shape[2], **on),
            "neighbor_input": torch.zeros(c, self.n_actions, **on),
            "neighbors": torch.full((c, width), -1, dtype=torch.int64, **on),
            "neighbor_actions": torch.full((c, width), -1, dtype=torch.int64, **on),
            "action": torch.zeros(c, dtype=torch.int64, **on),
            "reward": torch.zeros(c, **on),
            "done": torch.ones(c, dtype=torch.bool, **on),
            "next": torch.full((c,), -1, dtype=torch.int64, **on),
            "transition": torch.zeros(c, dtype=torch.bool, **on),
        }

    def eligible_ids(self) -> torch.Tensor:
        """Ids (long, on the device) of the kept transitions whose s' is known (or that are
        terminal): between rounds, every transition kept."""
        if not self._rows:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        r, c = self._rows, self.capacity
        position = (r["transition"] & (r["done"] | (r["next"] >= 0))).nonzero().squeeze(1)
        # The id kept at a position: the last written there.
        return position + c * ((self.written - 1 - position) // c)

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """The ring as it is (on the CPU, loadable with weights_only) and its counts."""
        state: dict[str, torch.Tensor | int] = {
            "capacity": self.capacity, "n_actions": self.n_actions, "added": self.added,
            "entries": self._entries, "block": self._block, "slots": self._slots,
        }
        return state | {name: t.cpu() for name, t in self._rows.items()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a replay saved between rounds, onto this replay's device."""
        if "entries" not in state:
            raise ValueError("this replay was saved by the numpy ReplayBuffer (a torch-backend "
                             "run from before training on tensors): its rows are not whole "
                             "steps; train that run again")
        self.capacity, self.n_actions = int(state["capacity"]), int(state["n_actions"])
        self._entries, self._block = int(state["entries"]), int(state["block"])
        self._slots, self._streams = int(state["slots"]), {}
        self._added.fill_(int(state["added"]))
        self._rows = {name: state[name].to(self.device) for name in ROW_FIELDS if name in state}


def _pad(indices: torch.Tensor, width: int) -> torch.Tensor:
    """long [..., K] padded with -1 to ``width`` columns."""
    missing = width - indices.shape[-1]
    return indices if not missing else torch.nn.functional.pad(indices, (0, missing), value=-1)
