"""The torch games stepped beside magent2, from the same state with the same actions and the same
attack order, compared field by field after every step.

magent2 shuffles the attacks with its engine's ``std::default_random_engine`` (libstdc++'s
``minstd_rand0``) and nothing else in a step draws from it; reseeding the engine each round
(``set_seed``) lets ``Minstd`` replay its shuffle, so the torch game gets the very same order.

Run directly for the long check: ``python tests/magent2_twin.py --steps 10000``; with
``--device cuda`` the torch games step on the GPU (the state and the actions go there, every field
comes back to be compared).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version

import numpy as np
import torch

from cmfq.envs import BattleEnv, TigerDeerEnv
from cmfq.envs.torch_battle import TorchBattle
from cmfq.envs.torch_tiger_deer import TorchTigerDeer


class Minstd:
    """libstdc++'s ``std::default_random_engine`` (minstd_rand0)."""

    M = 2**31 - 1

    def __init__(self, seed: int) -> None:
        self.state = seed % self.M or 1

    def __call__(self) -> int:
        self.state = self.state * 16807 % self.M
        return self.state


def magent2_order(rng: Minstd, attackers: list[int], n_slots: int) -> torch.Tensor:
    """The rank of each slot in magent2's shuffled attack buffer (``attackers``, in the order
    their actions were set): ``j = rand() % (i + 1); swap(buf[i], buf[j])`` for each i."""
    buf = list(attackers)
    for i in range(len(buf)):
        j = rng() % (i + 1)
        buf[i], buf[j] = buf[j], buf[i]
    order = torch.full((1, n_slots), n_slots, dtype=torch.long)
    for rank, slot in enumerate(buf):
        order[0, slot] = rank
    return order


GAMES = {"battle": (BattleEnv, TorchBattle), "tiger-deer": (TigerDeerEnv, TorchTigerDeer)}
FIELDS = ("rewards", "alive", "positions", "view", "features", "done", "terminated")


@dataclass
class Tally:
    """Steps compared and mismatches per field."""

    steps: int = 0
    rounds: int = 0
    mismatches: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))
    kills: int = 0
    wiped: int = 0
    attacks: int = 0
    first: str = ""

    def total(self) -> int:
        return sum(self.mismatches.values())


class Twin:
    """A magent2 env and its torch game, kept in the same state."""

    def __init__(self, game: str, map_size: int, compile: bool = False, device: str = "cpu",
                 **options) -> None:
        magent_cls, torch_cls = GAMES[game]
        self.env = magent_cls(map_size, seed=0, **options)
        self.game = torch_cls(map_size, compile=compile, device=device, **options)
        self.device = torch.device(device)
        self.groups = self.game.groups
        self.map_size = map_size

    def start(self, seed: int, positions: dict[str, np.ndarray] | None = None,
              walls: np.ndarray | None = None) -> None:
        """A new round: magent2's own placement, or agents at ``positions`` (x, y per group) and
        ``walls``; then both engines start from that state and the shuffle's generator from
        ``seed``."""
        env = self.env
        env.reset(seed)
        if positions is not None:
            eng = env._engine
            eng.reset()
            if walls is not None and len(walls):
                eng.add_walls(method="custom", pos=np.asarray(walls, dtype=np.int32))
            for g in env._engine_group_names():
                xy = np.asarray(positions[g], dtype=np.int32).reshape(-1, 2)
                pos = np.concatenate([xy, np.zeros((len(xy), 1), np.int32)], 1)
                eng.add_agents(env._handles[g], method="custom", pos=pos)
        env._engine.set_seed(seed)
        self.rng = Minstd(seed)
        # the torch game's slots beyond magent2's agents start dead
        pos = torch.zeros(1, self.game.n_slots, 2, dtype=torch.long)
        alive = torch.zeros(1, self.game.n_slots, dtype=torch.bool)
        for g in self.groups:
            live = torch.from_numpy(env.positions(g)).long()
            first = self.game.slices[g].start
            pos[0, first : first + len(live)] = live
            alive[0, first : first + len(live)] = True
        grid = torch.zeros(1, self.map_size, self.map_size, dtype=torch.bool)
        w = env.walls()
        grid[0, w[:, 1], w[:, 0]] = True
        dev = self.device
        self.game.set_state(pos.to(dev), grid.to(dev), alive=alive.to(dev))

    def step(self, actions: dict[str, np.ndarray], tally: Tally) -> bool:
        """One step of both with ``actions`` (per group, one per live agent); count mismatches.
        Returns whether the round is over."""
        game, env = self.game, self.env
        alive = {g: game.alive_mask(g)[0].cpu().numpy() for g in self.groups}
        full = {}
        attackers = []
        for k, g in enumerate(self.groups):
            a = np.zeros(game.counts[g], dtype=np.int64)
            a[alive[g]] = actions[g]
            full[g] = torch.from_numpy(a)[None].to(self.device)
            slots = np.flatnonzero(alive[g]) + game.slices[g].start
            attackers += [int(s) for s, x in zip(slots, actions[g], strict=True)
                          if x >= game.n_moves[k]]
        order = magent2_order(self.rng, attackers, game.n_slots)
        tally.attacks += len(attackers)
        mine = game.step(full, order.to(self.device))
        theirs = env.step({g: actions[g].astype(np.int32) for g in self.groups})
        tally.steps += 1

        def check(name: str, a, b) -> None:
            if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
                tally.mismatches[name] += 1
                if not tally.first:
                    tally.first = f"round {tally.rounds}, step {env.step_count}: {name}"

        for g in self.groups:
            acted = alive[g]
            check("rewards", mine.rewards[g][0].cpu().numpy()[acted], theirs.rewards[g])
            check("alive", mine.alive[g][0].cpu().numpy()[acted], theirs.alive[g])
            tally.kills += int((~theirs.alive[g]).sum())
            now = game.alive_mask(g)[0].cpu().numpy()
            check("positions", game.positions(g)[0].cpu().numpy()[now], env.positions(g))
            obs = mine.next_obs[g]
            check("view", obs.view[0].cpu().numpy()[acted], theirs.next_obs[g].view)
            check("features", obs.features[0].cpu().numpy()[acted], theirs.next_obs[g].features)
        done = bool(mine.done[0]) or game.step_count[0] >= env.max_steps
        check("done", done, theirs.done)
        check("terminated", bool(mine.terminated[0]), theirs.terminated)
        tally.wiped += int(theirs.terminated)
        return theirs.done


def random_actions(rng: np.random.Generator, game, attack_share: float,
                   hunt: float) -> dict[str, np.ndarray]:
    """An action per live agent: with probability ``hunt`` the attack on an enemy next to it if
    there is one, else a move towards the nearest enemy; otherwise an attack with probability
    ``attack_share`` (where it has attacks), else a move, each uniform."""
    s = game.map_size
    occupant = np.full((s, s), -1)
    alive = game.alive[0].cpu().numpy()
    pos = game.pos[0].cpu().numpy()
    groups = game.group_of_slot.cpu().numpy()
    occupant[pos[alive, 1], pos[alive, 0]] = groups[alive]
    out = {}
    for k, g in enumerate(game.groups):
        live = np.flatnonzero(alive & (groups == k))
        n, n_moves = len(live), game.n_moves[k]
        delta = game._delta[k, : game.n_actions[k]].cpu().numpy()
        acts = rng.integers(0, n_moves, n)
        if game.n_actions[k] > n_moves:
            attacks = rng.integers(n_moves, game.n_actions[k], n)
            acts = np.where(rng.random(n) < attack_share, attacks, acts)
        enemies = pos[alive & (groups != k)]
        hunting = rng.random(n) < hunt
        for i, slot in enumerate(live):
            if not hunting[i] or not len(enemies):
                continue
            x, y = pos[slot]
            near = [a for a in range(n_moves, game.n_actions[k])
                    if 0 <= x + delta[a, 0] < s and 0 <= y + delta[a, 1] < s
                    and occupant[y + delta[a, 1], x + delta[a, 0]] not in (-1, k)]
            if near:
                acts[i] = rng.choice(near)
            else:
                target = enemies[np.abs(enemies - pos[slot]).sum(1).argmin()]
                acts[i] = np.abs(pos[slot] + delta[:n_moves] - target).sum(1).argmin()
        out[g] = acts
    return out


def scattered(rng: np.random.Generator, game, walls: int = 0):
    """Every agent (and ``walls`` walls) on distinct random inner cells: crowded fights."""
    s = game.map_size
    cells = rng.permutation((s - 2) ** 2)[: game.n_slots + walls]
    xy = np.stack([cells % (s - 2) + 1, cells // (s - 2) + 1], 1)
    positions = {g: xy[walls:][game.slices[g]] for g in game.groups}
    return positions, xy[:walls]


def run(game: str, map_size: int, steps: int, seed: int = 0, compile: bool = False,
        device: str = "cpu", **options) -> Tally:
    """``steps`` random steps in rounds of both kinds of start (the env's own, and scattered),
    random actions with a varying share of attacks and of hunting; the torch games on
    ``device``."""
    twin = Twin(game, map_size, compile, device, **options)
    rng = np.random.default_rng(seed)
    tally = Tally()
    while tally.steps < steps:
        round_seed = int(rng.integers(1, 2**31 - 1))
        if tally.rounds % 2:
            positions, walls = scattered(rng, twin.game, walls=int(rng.integers(0, map_size)))
            twin.start(round_seed, positions, walls)
        else:
            twin.start(round_seed)
        share, hunt = float(rng.choice([0.2, 0.5, 0.8])), float(rng.choice([0.0, 0.5, 0.9]))
        done = False
        while not done and tally.steps < steps:
            done = twin.step(random_actions(rng, twin.game, share, hunt), tally)
        tally.rounds += 1
    return tally


def cpu_name() -> str:
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true",
                        help="the torch games with their compiled observation")
    parser.add_argument("--device", default="cpu", help="where the torch games step")
    parser.add_argument("--max-steps", type=int, default=200,
                        help="steps of a round (short rounds: more starts)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"command: python tests/magent2_twin.py --steps {args.steps} --seed {args.seed} "
          f"--max-steps {args.max_steps}{' --compile' if args.compile else ''}"
          f"{'' if args.device == 'cpu' else f' --device {args.device}'}")
    gpu = (f", torch games on {torch.cuda.get_device_name(args.device)}"
           if args.device.startswith("cuda") else "")
    print(f"machine: {cpu_name()}, torch threads 1, python {platform.python_version()}, "
          f"torch {torch.__version__}, magent2 {version('magent2')}{gpu}")
    bad = 0
    for game in ("battle", "tiger-deer"):
        for size in (20, 40):
            t0 = time.perf_counter()
            tally = run(game, size, args.steps, args.seed, args.compile, args.device,
                        max_steps=args.max_steps)
            bad += tally.total()
            print(f"{game} map {size}: {tally.steps} steps in {tally.rounds} rounds "
                  f"({tally.wiped} ended by a wipe-out), "
                  f"{tally.attacks} attacks, {tally.kills} deaths; mismatches "
                  f"{tally.total()} {tally.mismatches} {tally.first} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
