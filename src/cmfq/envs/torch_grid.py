"""magent2's gridworld rules as batched tensors: G games stepped at once on any torch device.

The rules are magent2's (``src/gridworld/GridWorld.cc``, ``Map.cc``, ``RewardEngine.cc``), for
1x1 agents without turning, food or goals (what battle and tiger-deer use). One step is:

1. **attacks**, on the positions before anyone moves, in a shuffled order (see "Random draws");
   an attacker killed earlier in that order is skipped; an attack on a teammate, a wall, an empty
   cell or a cell emptied by an earlier kill costs the attack penalty and does nothing else; a hit
   takes the attacker's damage from the victim, who dies when its HP falls *below* 0; a kill pays
   the victim's kill reward and its kill supply of HP (capped); a death overwrites the victim's
   reward with its dead penalty;
2. **recovery**: every survivor gains ``step_recover`` HP (at most its maximum), or with a negative
   one loses it and starves below 0;
3. **moves**, one agent at a time in slot order (the groups in order, agents in order): a move
   succeeds when its target cell is inside the walls and empty at that moment;
4. **reward rules** on the step's attacks (the game's ``_rule_rewards``).

Every rule that magent2 runs agent by agent (attacks in their order, moves in theirs) is solved
here for all agents of all games at once: an agent's outcome depends only on the agents before it,
so iterating "outcome given the others' current outcomes" from any guess reaches magent2's answer
after at most as many passes as the longest chain of agents that wait on each other (one or two in
practice); each pass is a few tensor operations over all games.

HP and rewards are float32 and computed in magent2's order of operations, so they match it bit for
bit. Agents keep fixed slots: a dead agent's slot stays, masked by ``alive``.

Random draws: each game has a seed, and draws its placements and attack orders from it alone
with counter-based draws (``counter_rng.py``, SplitMix64 on int64 tensors): a round's placement
from ``(seed, PLACE, round, index)``, a step's attack order from ``(seed, ATTACK, step, slot)``,
where ``round`` counts the game's rounds and ``step`` its steps played since its seed was set
(over ``reset_done``'s restarts). All games draw in one vectorised operation, and game j plays
the same alone or among any others, on any device (the draws are integer arithmetic, the same
bits on the CPU and on CUDA). They are not magent2's draws: its game of the same seed differs.

Above 99 x 99 cells magent2 moves the agents of separate bands of the map in parallel threads, an
order of its own; the torch games keep the one order at every size (exact up to 99 x 99).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from cmfq.envs.counter_rng import as_int64, ranks, splitmix64

_EPS = 1e-8
"""magent2's CircleRange tolerance."""
_STATE = ("pos", "hp", "alive", "last_action", "last_reward", "step_count", "played")
"""The state a step changes (``walls`` stay)."""
PLACE, ATTACK = 0, 1
"""The streams of a game's draws: its placements, its attack orders."""


@dataclass(frozen=True)
class AgentKind:
    """One agent type of magent2 (its ``register_agent_type`` fields that our games set)."""

    hp: float
    speed: float
    """Move radius: the moves are the cells of a disc of this radius, the agent's own included."""
    view_radius: float
    attack_radius: float
    """The attacks are the cells of a disc of this radius, the agent's own cell excluded."""
    damage: float = 0.0
    step_recover: float = 0.0
    kill_supply: float = 0.0
    """HP its killer gains."""
    kill_reward: float = 0.0
    """Reward its killer gains."""
    dead_penalty: float = 0.0
    step_reward: float = 0.0
    attack_penalty: float = 0.0


def circle_offsets(radius: float, inner: float) -> list[tuple[int, int]]:
    """(dx, dy) of magent2's ``CircleRange(radius, inner, parity=1)``, in its order (rows of dy,
    then dx): the cells at distance < radius and > inner from the centre."""
    center = int(radius)
    width = 2 * int(radius + _EPS) + 1
    cells = []
    for i in range(width):
        for j in range(width):
            dis = math.hypot(j - center, i - center)
            if dis < radius + _EPS and dis > inner - _EPS:
                cells.append((j - center, i - center))
    return cells


class Observation(NamedTuple):
    """What one group sees, for all games; rows of dead agents are zeros."""

    view: torch.Tensor
    """float32 [G, n, V, V, C]: walls, then each group (own first): presence, HP / max HP and,
    with the minimap, the group's density over the map binned to V x V (+1 at the agent's bin)."""
    features: torch.Tensor
    """float32 [G, n, n_actions + 3]: last action one-hot, last reward, x / width, y / height."""


class StepResult(NamedTuple):
    """One step of all games; per group, rows as in the group's slots."""

    next_obs: dict[str, Observation]
    rewards: dict[str, torch.Tensor]
    """float32 [G, n]; zeros for agents dead before the step."""
    alive: dict[str, torch.Tensor]
    """bool [G, n]: alive after the step."""
    done: torch.Tensor
    """bool [G]: the round is over (``max_steps`` reached or a group wiped out)."""
    terminated: torch.Tensor
    """bool [G]: the round ended because a group was wiped out."""


def _on_own_threads(method):
    """Run ``method`` on the world's ``threads`` (see ``TorchGridWorld``)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        before = torch.get_num_threads()
        if self.threads is None or self.threads == before:
            return method(self, *args, **kwargs)
        torch.set_num_threads(self.threads)
        try:
            return method(self, *args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return run


class TorchGridWorld:
    """G games of one magent2 gridworld configuration as tensors on ``device``; ``compile``
    compiles the observation with ``torch.compile``; ``threads``, where given, is the number of
    torch threads the games' own operations (steps, resets, observations) run on, torch's
    setting restored after each (the operations are small: on a CPU that other work keeps busy,
    each parallel one waits for every thread to be scheduled, see docs/performance.md; 1 keeps
    them on the calling thread).

    Subclasses give ``groups`` (names, in the order magent2 is handed their actions), ``kinds``
    (the ``AgentKind`` of each group), ``engine_order`` (the groups in magent2's group order, which
    fixes the observation's channel order), their placement (``_place``) and reward rules
    (``_rule_rewards``).

    State (all [G, A] over the A agent slots, the groups one after another): ``pos`` (int64
    [G, A, 2], x and y), ``hp``, ``alive``, ``last_action`` (-1: none yet), ``last_reward``; and
    ``walls`` (bool [G, H, W], the border included) and ``step_count`` ([G]). The counters of each
    game's draws (int64 [G], see the module's "Random draws"): ``seeds``, ``rounds`` (rounds
    started before the current one) and ``played`` (steps played, over all its rounds).
    """

    groups: tuple[str, ...] = ()
    engine_order: tuple[str, ...] = ()
    minimap_mode: bool = True

    def __init__(self, map_size: int, counts: dict[str, int], kinds: dict[str, AgentKind], *,
                 max_steps: int, device: torch.device | str = "cpu", compile: bool = False,
                 threads: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.threads = threads
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.map_size = map_size
        self.max_steps = max_steps
        self.device = torch.device(device)
        self.kinds = kinds
        self.counts = counts
        starts = [0]
        for g in self.groups:
            starts.append(starts[-1] + counts[g])
        self.slices = {g: slice(starts[i], starts[i + 1]) for i, g in enumerate(self.groups)}
        self.n_slots = starts[-1]
        dev = self.device
        gid = [i for i, g in enumerate(self.groups) for _ in range(counts[g])]
        self.group_of_slot = torch.tensor(gid, dtype=torch.long, device=dev)
        self.slot_index = torch.arange(self.n_slots, device=dev)

        moves = [circle_offsets(kinds[g].speed, 0.0) for g in self.groups]
        attacks = [circle_offsets(kinds[g].attack_radius, 0.5) for g in self.groups]
        self.n_moves = [len(m) for m in moves]
        self.n_actions = [len(m) + len(a) for m, a in zip(moves, attacks, strict=True)]
        width = max(self.n_actions)
        table = torch.zeros(len(self.groups), width, 2, dtype=torch.long)
        for k, offsets in enumerate(moves):
            table[k, : len(offsets)] = torch.tensor(offsets)
        for k, offsets in enumerate(attacks):
            if offsets:
                table[k, self.n_moves[k] : self.n_actions[k]] = torch.tensor(offsets)
        self._delta = table.to(dev)
        self._max_hits = max(len(a) for a in attacks)

        def per_slot(field: str) -> torch.Tensor:
            values = [getattr(kinds[g], field) for g in self.groups]
            return torch.tensor(values, dtype=torch.float32, device=dev)[self.group_of_slot]

        self._hp_max = per_slot("hp")
        self._step_recover = per_slot("step_recover")
        self._kill_supply = per_slot("kill_supply")
        self._kill_reward = per_slot("kill_reward")
        self._dead_penalty = per_slot("dead_penalty")
        self._step_reward = per_slot("step_reward")
        self._attack_penalty = per_slot("attack_penalty")
        self._n_moves_slot = torch.tensor(self.n_moves, device=dev)[self.group_of_slot]
        self._n_actions_slot = torch.tensor(self.n_actions, device=dev)[self.group_of_slot]
        self._incoming = incoming_damage(self.groups, kinds, attacks).to(dev)[self.group_of_slot]
        self._planes = view_planes(self, dev)
        # The first call of each shape compiles (seconds). On the CPU the compiled observation
        # is slower than eager (docs/performance.md): inductor does not keep the planes'
        # overlapping blocks as a view.
        self._room: torch.Tensor | None = None
        self._kept: dict[tuple[str, ...], tuple[torch.Tensor, list[torch.Tensor]]] = {}
        self._observe = (torch.compile(self._observations, dynamic=False) if compile
                         else self._observations)
        self.G = 0

    # --- state ---------------------------------------------------------------------------------
    def set_state(self, pos: torch.Tensor, walls: torch.Tensor, hp: torch.Tensor | None = None,
                  alive: torch.Tensor | None = None, seeds: torch.Tensor | None = None) -> None:
        """Start G games from ``pos`` (int [G, A, 2]) and ``walls`` (bool [G, H, W], the border
        included); HP full and all alive unless given; no last action or reward yet. ``seeds``
        (int64 [G]) seed the games' draws, their counters from 0 (default: the seeds of
        ``reset(G, 0)``)."""
        dev = self.device
        self.pos = pos.to(dev, torch.long).clone()
        self.G = self.pos.shape[0]
        self.walls = walls.to(dev, torch.bool).clone()
        self.hp = (self._hp_max.expand(self.G, -1).clone() if hp is None
                   else hp.to(dev, torch.float32).clone())
        self.alive = (torch.ones(self.G, self.n_slots, dtype=torch.bool, device=dev)
                      if alive is None else alive.to(dev, torch.bool).clone())
        self.last_action = torch.full((self.G, self.n_slots), -1, dtype=torch.long, device=dev)
        self.last_reward = torch.zeros(self.G, self.n_slots, device=dev)
        self.step_count = torch.zeros(self.G, dtype=torch.long, device=dev)
        self.seeds = (splitmix64(0, torch.arange(self.G, device=dev)) if seeds is None
                      else seeds.to(dev, torch.long).clone())
        self.rounds = torch.zeros_like(self.step_count)
        self.played = torch.zeros_like(self.step_count)

    def border(self, games: int) -> torch.Tensor:
        """bool [games, H, W]: the map's border walls."""
        s = self.map_size
        walls = torch.zeros(games, s, s, dtype=torch.bool, device=self.device)
        walls[:, 0, :] = walls[:, -1, :] = walls[:, :, 0] = walls[:, :, -1] = True
        return walls

    def _map_room(self) -> torch.Tensor:
        """long [G, H*W + 1], for the caller to fill: one per world, kept between calls (a fresh
        one costs the CPU page faults)."""
        shape = (self.G, self.map_size**2 + 1)
        if self._room is None or self._room.shape != shape:
            self._room = torch.empty(shape, dtype=torch.long, device=self.device)
        return self._room

    def _occupants(self, cell: torch.Tensor) -> torch.Tensor:
        """long [G, A]: the slot of the live agent on each cell of ``cell`` (long [G, A], cells
        y * W + x), -1 where none."""
        s = self.map_size
        at = torch.where(self.alive, self.pos[..., 1] * s + self.pos[..., 0], s * s)
        grid = self._map_room().fill_(-1)  # the dead write to a cell past the end
        return grid.scatter_(1, at, self.slot_index.expand(self.G, -1)).gather(1, cell)

    # --- the step ------------------------------------------------------------------------------
    def step_slots(self, actions: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        """Advance every game one step with ``actions`` (long [G, A]; ignored for dead slots).

        ``order`` (long [G, A]) ranks the attacks (lower goes first); by default each game's
        ``attack_order``, a uniformly random order as magent2's shuffle. Returns the step's rewards
        (float32 [G, A]).
        """
        G, A, s, dev = self.G, self.n_slots, self.map_size, self.device
        actions = actions.to(dev, torch.long)
        alive0 = self.alive
        n_moves = self._n_moves_slot
        kind = self.group_of_slot.expand(G, -1)
        delta = self._delta[kind, actions.clamp(0, self._delta.shape[1] - 1)]
        target = self.pos + delta
        tx, ty = target[..., 0], target[..., 1]
        on_board = (tx >= 0) & (tx < s) & (ty >= 0) & (ty < s)
        cell = (ty.clamp(0, s - 1) * s + tx.clamp(0, s - 1))

        # 1. attacks
        attacking = alive0 & (actions >= n_moves)
        victim = torch.where(on_board, self._occupants(cell), -1)
        enemy = (victim >= 0) & (
            self.group_of_slot[victim.clamp(min=0)] != self.group_of_slot)
        victim = torch.where(attacking & enemy, victim, -1)
        order = self.attack_order() if order is None else order.to(dev, torch.long)
        # The victim's HP after k hits (hp -= damage, k times) and the hit that kills it.
        hp_after = [self.hp]
        for _ in range(self._max_hits):
            hp_after.append(hp_after[-1] - self._incoming)
        hp_after = torch.stack(hp_after)  # [max_hits + 1, G, A]
        # Each hit takes the same damage, so the levels at or above 0 come first: their count is
        # the hit that kills (max_hits + 1: none does).
        fatal_hits = (hp_after >= 0).sum(0)
        v = victim.clamp(min=0)
        fatal = fatal_hits.gather(1, v)
        # The attacks sorted by victim, then by order: an attack's hits before it are the acting
        # attacks before it in its victim's run.
        by_victim = torch.where(victim >= 0, victim * A + order, A * A + self.slot_index)
        perm = by_victim.argsort(1)
        sorted_victim = victim.gather(1, perm)
        run_start = torch.ones_like(perm, dtype=torch.bool)
        run_start[:, 1:] = sorted_victim[:, 1:] != sorted_victim[:, :-1]
        run_first = torch.where(run_start, self.slot_index, 0).cummax(1).values
        inf = torch.full((G, A), A, dtype=torch.long, device=dev)
        acts = attacking
        for _ in range(A + 1):
            acting = acts.gather(1, perm).long()
            before = acting.cumsum(1) - acting
            hits_before = torch.empty_like(before).scatter_(
                1, perm, before - before.gather(1, run_first))
            lands = acts & (victim >= 0) & (hits_before < fatal)
            kills = lands & (hits_before == fatal - 1)
            killed_at = inf.scatter_reduce(1, torch.where(kills, v, 0),
                                           torch.where(kills, order, A), "amin")
            now = attacking & (killed_at > order)  # killed before its turn: skipped
            if torch.equal(now, acts):
                break
            acts = now
        hits = torch.zeros(G, A, dtype=torch.long, device=dev).scatter_add(
            1, v, lands.long())
        hp = hp_after.gather(0, hits[None]).squeeze(0)
        killed = alive0 & (hits >= fatal_hits)
        supply = self._kill_supply.expand(G, -1).gather(1, v)
        hp = torch.where(kills, torch.minimum(self._hp_max, hp + supply), hp)
        kill_reward = torch.where(kills, self._kill_reward.expand(G, -1).gather(1, v), 0.0)
        reward = self._step_reward.expand(G, -1).clone()
        reward = torch.where(acts, reward + (kill_reward + self._attack_penalty), reward)
        alive1 = alive0 & ~killed

        # 2. recovery (or starving)
        rec = self._step_recover
        hp = torch.where(alive1, torch.where(rec > 0, torch.minimum(self._hp_max, hp + rec),
                                             hp - (-rec)), hp)
        starved = alive1 & (hp < 0)
        alive2 = alive1 & ~starved
        dead = alive0 & ~alive2
        reward = torch.where(dead, self._dead_penalty, reward)

        # 3. moves, one agent after another in slot order
        moving = alive2 & (actions < n_moves) & ((delta[..., 0] != 0) | (delta[..., 1] != 0))
        inside = (tx >= 0) & (ty >= 0) & (tx + 1 < s) & (ty + 1 < s)
        wall = self.walls.view(G, -1).gather(1, cell)
        movable = moving & inside & ~wall
        self.alive = alive2
        occupant = self._occupants(cell)
        left_earlier = (occupant >= 0) & (occupant < self.slot_index)
        occ = occupant.clamp(min=0)
        slots = self.slot_index.expand(G, -1)
        # the agents that target one cell share a key: the lowest of their slots
        key = self._map_room().fill_(A).scatter_reduce_(1, cell, slots, "amin").gather(1, cell)
        nobody = torch.full((G, A + 1), A, dtype=torch.long, device=dev)
        moved = movable
        for _ in range(A + 1):
            # the first agent to move into each cell; the cell is taken for all after it
            first = nobody.scatter_reduce(1, torch.where(moved, key, A), slots, "amin")
            taken = first.gather(1, key) < self.slot_index
            freed = left_earlier & moved.gather(1, occ)
            now = movable & ((occupant < 0) | freed) & ~taken
            if torch.equal(now, moved):
                break
            moved = now
        self.pos = torch.where(moved[..., None], target, self.pos)

        # 4. reward rules on the attacks that hit without killing
        reward = self._rule_rewards(reward, lands & ~kills, victim)
        self.hp = hp
        self.last_action = torch.where(alive0, actions, self.last_action)
        self.last_reward = torch.where(alive0, reward, 0.0)
        self.step_count = self.step_count + 1
        self.played = self.played + 1
        return self.last_reward.clone()

    def attack_order(self) -> torch.Tensor:
        """long [G, A]: the rank of each slot in this step's attack order, each game's drawn from
        ``(seed, ATTACK, played, slot)``: the slots sorted by their draws (equal draws, which
        come with probability below A^2 / 2^65 a step, by slot), a uniformly random order."""
        step_keys = splitmix64(splitmix64(self.seeds, ATTACK), self.played)
        return ranks(splitmix64(step_keys[:, None], self.slot_index))

    def _rule_rewards(self, reward: torch.Tensor, hit: torch.Tensor,
                      victim: torch.Tensor) -> torch.Tensor:
        """The game's reward rules: ``hit`` (bool [G, A]) marks the attackers whose attack hit
        ``victim`` (slot) without killing it (magent2's ``attack`` event)."""
        return reward

    # --- the env API: per group, over all games -------------------------------------------------
    def reset(self, games: int, seed: int) -> dict[str, Observation]:
        """Start ``games`` rounds: ``reset_each`` with the seeds ``splitmix64(seed, j)`` for
        j = 0 .. games - 1 (the first outputs of SplitMix64 seeded with ``seed``)."""
        if games < 1:
            raise ValueError(f"games must be >= 1, got {games}")
        return self.reset_each(splitmix64(seed, torch.arange(games, device=self.device)))

    @_on_own_threads
    def reset_each(self, seeds) -> dict[str, Observation]:
        """Start ``len(seeds)`` rounds, game j's draws (its placements and attack orders) seeded
        by ``seeds[j]`` (ints of any size, taken modulo 2^64, or an int64 tensor): game j is the
        game its seed gives, alone or among any others."""
        if len(seeds) < 1:
            raise ValueError("reset_each needs at least one seed")
        seeds = as_int64(seeds, self.device)
        pos, walls = self._place(self._round_keys(seeds, 0))
        self.set_state(pos, walls, seeds=seeds)
        return self.observe_all()

    @_on_own_threads
    def reset_done(self, done: torch.Tensor) -> None:
        """Start new rounds in the games where ``done`` (bool [G]) is set; the others go on.
        A game's new round is placed by its seed and round count; its attack orders go on
        counting its steps."""
        d = done.to(self.device)
        if not bool(d.any()):
            return
        self.rounds = self.rounds + d.long()
        pos, walls = self._place(self._round_keys(self.seeds, self.rounds))
        fresh_state = {"pos": (pos, d[:, None, None]), "walls": (walls, d[:, None, None]),
                "hp": (self._hp_max.expand(self.G, -1), d[:, None]),
                "alive": (torch.ones_like(self.alive), d[:, None]),
                "last_action": (torch.full_like(self.last_action, -1), d[:, None]),
                "last_reward": (torch.zeros_like(self.last_reward), d[:, None]),
                "step_count": (torch.zeros_like(self.step_count), d)}
        for name, (fresh, mask) in fresh_state.items():
            setattr(self, name, torch.where(mask, fresh.to(self.device), getattr(self, name)))

    @staticmethod
    def _round_keys(seeds: torch.Tensor, rounds: torch.Tensor | int) -> torch.Tensor:
        """int64 [G]: the key of each game's placement of round ``rounds``, from
        ``(seed, PLACE, round)``."""
        return splitmix64(splitmix64(seeds, PLACE), rounds)

    def _place(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Starting positions (long [games, A, 2]) and walls (bool [games, H, W]) of games whose
        placements have ``keys`` (int64 [games], ``_round_keys``): a game's draws are
        ``splitmix64(key, index)`` for indices 0, 1, ... (one rule for every game)."""
        raise NotImplementedError

    def observe(self, group: str) -> Observation:
        return self.observe_groups((group,))[group]

    def observe_all(self) -> dict[str, Observation]:
        """Every group's observation (``observe``), sharing the work."""
        return self.observe_groups(self.groups)

    def positions(self, group: str) -> torch.Tensor:
        """long [G, n, 2]: (x, y) of ``group``'s agents (the dead keep their last cell)."""
        return self.pos[:, self.slices[group]]

    def alive_mask(self, group: str) -> torch.Tensor:
        """bool [G, n]."""
        return self.alive[:, self.slices[group]]

    @_on_own_threads
    def step(self, actions: dict[str, torch.Tensor], order: torch.Tensor | None = None,
             playing: torch.Tensor | None = None) -> StepResult:
        """One step of every game with ``actions[g]`` (int [G, n_g]; dead agents' are ignored).

        ``order``: see ``step_slots``; by default each game's ``attack_order``.
        ``playing`` (bool [G]): where given, the other games stay as they are (rewards 0; their
        draws' counters too).
        """
        parts = []
        for g in self.groups:
            if g not in actions:
                raise ValueError(f"no actions given for group {g!r}; every group must act")
            a = torch.as_tensor(actions[g], device=self.device).long()
            n = self.counts[g]
            if a.shape != (self.G, n):
                raise ValueError(f"group {g!r} needs actions of shape {(self.G, n)}, "
                                 f"got {tuple(a.shape)}")
            parts.append(a)
        every = torch.cat(parts, 1)
        bad = self.alive & ((every < 0) | (every >= self._n_actions_slot))
        if bool(bad.any()):  # one check for all groups; the message names the first bad one
            k = int(self.group_of_slot[bad.any(0)][0])
            raise ValueError(f"actions of group {self.groups[k]!r} must lie in "
                             f"[0, {self.n_actions[k]})")
        previous = {name: getattr(self, name) for name in _STATE}
        rewards = self.step_slots(every, order)
        if playing is not None:
            kept = ~playing.to(self.device)
            for name, value in previous.items():
                mask = kept.view(-1, *([1] * (value.dim() - 1)))
                setattr(self, name, torch.where(mask, value, getattr(self, name)))
            rewards = torch.where(kept[:, None], 0.0, rewards)
        wiped = torch.stack([~self.alive_mask(g).any(1) for g in self.groups]).any(0)
        done = wiped | (self.step_count >= self.max_steps)
        return StepResult(
            self.observe_all(),
            {g: rewards[:, self.slices[g]] for g in self.groups},
            {g: self.alive_mask(g).clone() for g in self.groups},
            done, wiped,
        )

    # --- observations --------------------------------------------------------------------------
    @_on_own_threads
    def observe_groups(self, groups: tuple[str, ...]) -> dict[str, Observation]:
        """The observations of ``groups``' agents in every game (magent2's ``get_observation``)."""
        return self._observe(groups, *self._workspace(groups))

    def _workspace(self, groups: tuple[str, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The observation's planes and, per group, room for its agents' windows: kept from one
        call to the next (a fresh block of this size costs the CPU a page fault per 4 KiB, more
        than filling it), made anew when the number of games or the groups change."""
        geo, C = self._planes, self._planes.channels
        size = len(groups) * self.G * geo.rows * geo.width * C + 2
        sizes = [(self.G * self.counts[g], geo.sizes[self.groups.index(g)]) for g in groups]
        shapes = [(rows, V, V * C) for rows, V in sizes]
        kept = self._kept.get(groups)
        if kept is None or kept[0].numel() != size or [w.shape for w in kept[1]] != shapes:
            kept = self._kept[groups] = (
                torch.empty(size, device=self.device),
                [torch.empty(shape, device=self.device) for shape in shapes])
        return kept

    def _observations(self, groups: tuple[str, ...], planes: torch.Tensor,
                      windows: list[torch.Tensor]) -> dict[str, Observation]:
        """``observe_groups`` in room of ``_workspace``.

        Each observing group gets one plane per game (laid out by ``ViewPlanes``), channels last
        as the view wants them: walls, then each group's presence and HP in the observer's channel
        order (its minimap channels 0), and below the map a blank window; and one minimap image
        per game, and a blank one. A view is then two gathers of one block (V rows of V cells x C
        channels) per agent: its game's minimap image plus its window of the map masked to the
        disc (a dead agent reads the blanks). A few large operations for all games and agents,
        not one per cell.
        """
        G, s, dev, geo = self.G, self.map_size, self.device, self._planes
        R, W, C = geo.pad, geo.width, geo.channels
        observers = [self.groups.index(g) for g in groups]
        n_obs, cells = len(observers), geo.rows * geo.width
        planes.zero_()  # its last two floats: where the dead write
        grid = planes[:-2].view(n_obs, G, geo.rows, W, C)
        grid[:, :, R : R + s, R : R + s, 0] = self.walls
        x, y = self.pos[..., 0], self.pos[..., 1]
        plane_start = torch.arange(n_obs * G, device=dev).view(n_obs, G, 1) * cells
        first = (plane_start + (y + R) * W + x + R) * C + geo.presence[observers][:, None]
        first = torch.where(self.alive, first, planes.numel() - 2)
        planes[torch.stack([first, first + 1], -1)] = torch.stack(
            [torch.ones_like(self.hp), self.hp / self._hp_max], -1)
        blank = geo.map_rows * W
        if self.minimap_mode:
            live = self.alive.float()
            sizes = torch.zeros(G, len(self.groups), device=dev).index_add_(
                1, self.group_of_slot, live)
            bins, density = {}, {}
            for k in observers:
                V = geo.sizes[k]
                if V not in density:  # each group's density over the map binned to V x V
                    scale = (s + V - 1) // V
                    bins[V] = (y // scale) * V + x // scale  # [G, A]
                    counts = torch.zeros(G, len(self.groups) * V * V, device=dev).scatter_add_(
                        1, self.group_of_slot * V * V + bins[V], live)
                    density[V] = counts.view(G, -1, V * V) / sizes[..., None]
            images = []  # per observer, its minimap image in each game, then a blank one
            for k in observers:
                V = geo.sizes[k]
                image = torch.zeros(G + 1, V, V, C, device=dev)
                image[:G, ..., 3::3] = density[V][:, geo.channel_groups[k]].transpose(
                    1, 2).reshape(G, V, V, -1)
                images.append(image.view(G + 1, V, V * C))
        # All the groups' views in one block: freed together, a block this size is reused by the
        # next step's (glibc), where two freed at once can go back to the system and fault in.
        shapes = [(G * self.counts[g], geo.sizes[k], geo.sizes[k] * C)
                  for g, k in zip(groups, observers, strict=True)]
        views = torch.empty(sum(math.prod(shape) for shape in shapes), device=dev)
        views = views.split([math.prod(shape) for shape in shapes])
        out = {}
        for o, (g, k) in enumerate(zip(groups, observers, strict=True)):
            sl = self.slices[g]
            n, V = sl.stop - sl.start, geo.sizes[k]
            r = V // 2
            alive = self.alive[:, sl]
            # the blocks of V rows of V cells x C channels that start at each cell of the planes
            blocks = planes.as_strided((n_obs * G * cells - (V - 1) * W - V + 1, V, V * C),
                                       (C, W * C, 1))
            corner = torch.where(alive, (y[:, sl] + R - r) * W + x[:, sl] + R - r, blank)
            window = torch.index_select(blocks, 0, (plane_start[o] + corner).view(-1),
                                        out=windows[o]).view(G, n, V, V * C)
            if self.minimap_mode:
                game = torch.where(alive, torch.arange(G, device=dev)[:, None], G)
                view = torch.index_select(images[o], 0, game.view(-1),
                                          out=views[o].view(shapes[o]))
                view = view.view(G, n, V, V * C).addcmul_(window, geo.discs[k])
                # + 1 at the agent's bin in every group's minimap (+ 0 for the dead)
                agent = torch.arange(G * n, device=dev).view(G, n)
                at = ((agent * V * V + bins[V][:, sl]) * C)[..., None] + geo.minimap_channels
                view.view(-1).index_put_((at,), alive.float()[..., None].expand_as(at),
                                         accumulate=True)
            else:
                view = torch.mul(window, geo.discs[k], out=views[o].view(G, n, V, V * C))
            n_act = self.n_actions[k]
            last = self.last_action[:, sl, None]
            features = [(last == torch.arange(n_act, device=dev)).float(),
                        self.last_reward[:, sl, None]]
            if self.minimap_mode:
                features += [x[:, sl, None].float() / s, y[:, sl, None].float() / s]
            out[g] = Observation(view.view(G, n, V, V, C),
                                 torch.where(alive[..., None], torch.cat(features, -1), 0.0))
        return out

    def _channel_order(self, group: str) -> list[str]:
        """The groups in channel order for ``group``'s view: magent2's group order, turned to
        start at ``group``."""
        i = self.engine_order.index(group)
        return list(self.engine_order[i:] + self.engine_order[:i])


@dataclass(frozen=True)
class ViewPlanes:
    """The layout of the planes the views are gathered from (``TorchGridWorld.observe_groups``).

    A plane is ``rows`` x ``width`` cells of ``channels`` floats: the map at rows and columns
    ``pad`` .. ``pad`` + s - 1 (``pad``, the largest view radius, keeps every window inside), then
    from row ``map_rows`` a blank window."""

    pad: int
    width: int
    rows: int
    map_rows: int
    channels: int
    sizes: tuple[int, ...]
    """Per group, its view's side V = 2r + 1."""
    discs: tuple[torch.Tensor, ...]
    """Per group, float32 [V, V * channels]: 1 on the view's disc (magent2's CircleRange)."""
    presence: torch.Tensor
    """long [groups, A]: the channel of each slot's presence in each observer's plane (its HP's
    follows)."""
    channel_groups: tuple[torch.Tensor, ...]
    """Per observer, the groups (indices) in its channel order."""
    minimap_channels: torch.Tensor
    """long [groups]: the minimap channels, in channel order."""


def view_planes(world: TorchGridWorld, device) -> ViewPlanes:
    """The planes' layout for ``world``'s groups, kinds, channel orders and minimap mode."""
    groups, s = world.groups, world.map_size
    radii = [int(world.kinds[g].view_radius) for g in groups]
    pad = max(radii)
    per = 3 if world.minimap_mode else 2
    channels = 1 + per * len(groups)
    sizes = tuple(2 * r + 1 for r in radii)
    discs = []
    for g, V in zip(groups, sizes, strict=True):
        disc = torch.zeros(V, V)
        r = V // 2
        for ox, oy in circle_offsets(world.kinds[g].view_radius, 0.0):
            disc[oy + r, ox + r] = 1.0
        discs.append(disc[..., None].expand(V, V, channels).reshape(V, V * channels).to(device))
    orders = [[groups.index(h) for h in world._channel_order(g)] for g in groups]
    rank = torch.tensor([[order.index(h) for h in range(len(groups))] for order in orders])
    presence = (1 + per * rank)[:, world.group_of_slot.cpu()]
    return ViewPlanes(
        pad=pad, width=s + 2 * pad, rows=s + 2 * pad + max(sizes), map_rows=s + 2 * pad,
        channels=channels, sizes=sizes,
        discs=tuple(discs), presence=presence.to(device),
        channel_groups=tuple(torch.tensor(o, device=device) for o in orders),
        minimap_channels=torch.arange(len(groups), device=device) * 3 + 3)


def incoming_damage(groups, kinds, attacks) -> torch.Tensor:
    """float32 [groups]: the damage of one hit on each group (0 if nobody can attack it).

    The attack solver assumes that every attacker of a group deals the same damage, and that an
    agent whose kills give it HP cannot itself be hit (so a kill's HP never changes a later hit's
    outcome): true of battle and tiger-deer. Raises NotImplementedError for a game where not.
    """
    attackers = {g: [a for a, att in zip(groups, attacks, strict=True) if a != g and att]
                 for g in groups}
    out = {}
    for g in groups:
        damages = {kinds[a].damage for a in attackers[g]}
        if len(damages) > 1:
            raise NotImplementedError(f"group {g!r} is attacked with different damages {damages}")
        out[g] = damages.pop() if damages else 0.0
    for g in groups:
        if kinds[g].kill_supply and any(out[a] for a in attackers[g]):
            raise NotImplementedError(f"the killers of {g!r} gain HP but can be hit themselves")
    return torch.tensor([out[g] for g in groups], dtype=torch.float32)
