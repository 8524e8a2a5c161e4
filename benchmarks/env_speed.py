"""How fast a game steps with no learning: magent2 on the host against the torch backend.

    python benchmarks/env_speed.py --backend magent2|torch [--game battle] [--map-size 40]
        [--games 8] [--device cpu] [--threads 2] [--env-threads N] [--policy random|CHECKPOINT]
        [--steps 400]

``--games`` games step in lockstep: magent2's one after another in this process (as training
does), the torch backend's as one batch on ``--device``. Every live agent acts and every step
computes every group's observations. After ``--warmup`` steps, ``--steps`` steps are timed; an env
step is one step of one game. The last line is ``env steps/s: N``.

``--threads`` sets torch's threads (and magent2's OpenMP threads); ``--env-threads N`` runs the
torch games' own operations on N of them (``TorchGridWorld``'s ``threads``; default: all).

``--policy random``: uniform actions, drawn on the backend's side (numpy for magent2, torch on the
device), and a game that ends starts again at once.

``--policy CHECKPOINT`` (a checkpoint's path or ``pretrained:NAME``, e.g.
``pretrained:cmfq-battle``): the games (``cmfq.envs.make_games`` on ``--backend``, with the
checkpoint's env settings) hand out each group's state as tensors; every group the checkpoint
fits acts by it (``Policy.act`` on ``--device``: the neighbourhoods, one forward for the group's
live agents of all games, one sample), the others at random (``RandomPolicy.act``), and each
group's previous actions stay a [G, n] tensor. The games play as training plays them: a game
that ends waits, its steps uncounted, and all start again when the last has ended.

``--train ALGO`` times training instead: ``--rounds`` rounds of ``cmfq train`` (``--games`` games
a round of at most ``--steps`` steps, then the updates) on ``--backend`` and ``--device``; the
rate is the env steps of the rounds after the first (which warms up) over their time, acting and
learning included (``--replay-ratio 0``: the games alone, with the learner acting).
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("magent2", "torch"), required=True)
    parser.add_argument("--game", choices=("battle", "tiger-deer"), default="battle")
    parser.add_argument("--map-size", type=int, default=40)
    parser.add_argument("--games", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--env-threads", type=int, default=None,
                        help="torch backend: the threads of the games' own operations "
                        "(default: all --threads)")
    parser.add_argument("--policy", default="random", metavar="random|CHECKPOINT",
                        help="random, or a checkpoint (a path or pretrained:NAME) that acts for "
                        "every group it fits (default random)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--compile", action="store_true",
                        help="torch backend: compile the observation (torch.compile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", metavar="ALGO", choices=("il", "mfq", "amfq", "cmfq"),
                        help="time training rounds of ALGO instead of random play")
    parser.add_argument("--rounds", type=int, default=4,
                        help="--train: rounds (the first warms up)")
    parser.add_argument("--replay-ratio", type=float, default=1.0,
                        help="--train: the run's replay_ratio (default 1, training's; 0: no "
                        "updates, so a round is its games: acting, the env and the replay)")
    return parser.parse_args()


def training_rate(args) -> float:
    import tempfile

    from cmfq.training.config import TrainConfig
    from cmfq.training.metrics import read_metrics
    from cmfq.training.trainer import train

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            algo=args.train, env=args.game, env_backend=args.backend, map_size=args.map_size,
            games_per_round=args.games, max_steps=args.steps, rounds=args.rounds,
            device=args.device, threads=args.threads, seed=args.seed, out=out,
            save_every=args.rounds, replay_ratio=args.replay_ratio)
        rows = read_metrics(train(config, progress=False) / "metrics.csv")[1:]
    for row in rows:
        print(f"round {int(row['round'])}: {row['steps']:.0f} env steps, "
              f"{row['updates']:.0f} updates, {row['steps_per_s']:.1f} env steps/s")
    return sum(r["steps"] for r in rows) / sum(r["steps"] / r["steps_per_s"] for r in rows)


def magent2_rate(args) -> float:
    import numpy as np

    from cmfq.envs import make_env

    envs = [make_env(args.game, args.map_size, seed=args.seed + i) for i in range(args.games)]
    for env in envs:
        env.reset()
    rng = np.random.default_rng(args.seed)

    def step_all() -> None:
        for env in envs:
            actions = {g: rng.integers(0, env.specs[g].n_actions, env.num_alive(g))
                       for g in env.groups}
            if env.step(actions).done:
                env.reset()

    for _ in range(args.warmup):
        step_all()
    start = time.perf_counter()
    for _ in range(args.steps):
        step_all()
    return args.steps * args.games / (time.perf_counter() - start)


def torch_rate(args) -> float:
    import torch

    from cmfq.envs.torch_battle import TorchBattle
    from cmfq.envs.torch_tiger_deer import TorchTigerDeer

    game_cls = {"battle": TorchBattle, "tiger-deer": TorchTigerDeer}[args.game]
    game = game_cls(args.map_size, device=args.device, compile=args.compile,
                    threads=args.env_threads)
    game.reset(args.games, seed=args.seed)
    generator = torch.Generator(device=game.device).manual_seed(args.seed)
    sync = torch.cuda.synchronize if game.device.type == "cuda" else (lambda: None)

    def step_all() -> None:
        actions = {g: torch.randint(0, game.n_actions[k], (args.games, game.counts[g]),
                                    device=game.device, generator=generator)
                   for k, g in enumerate(game.groups)}
        game.reset_done(game.step(actions).done)

    for _ in range(args.warmup):
        step_all()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step_all()
    sync()
    return args.steps * args.games / (time.perf_counter() - start)


def policy_rate(args) -> float:
    import itertools

    import torch

    from cmfq.algos import RandomPolicy
    from cmfq.envs import make_games
    from cmfq.training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(args.policy)
    if checkpoint.env != args.game:  # its env settings would not build this game
        raise SystemExit(f"{args.policy} was trained on {checkpoint.env!r}, not {args.game!r}")
    compiled = ({"compile": args.compile, "threads": args.env_threads}
                if args.backend == "torch" else {})
    games = make_games(args.game, args.map_size, args.games, backend=args.backend,
                       seed=args.seed, device=args.device, **compiled,
                       **checkpoint.env_settings())
    policy = checkpoint.policy(seed=args.seed, device=args.device)
    acting, misfits = {}, []
    for k, g in enumerate(games.groups):
        try:
            checkpoint.check_fits(games, g)
            acting[g] = policy
        except ValueError as misfit:
            misfits.append(str(misfit))
            acting[g] = RandomPolicy(games.specs[g].n_actions, seed=args.seed + k)
    if len(misfits) == len(games.groups):
        raise SystemExit(misfits[0])
    print("acting: " + ", ".join(
        f"{g} {'random' if isinstance(p, RandomPolicy) else checkpoint.path.name}"
        for g, p in acting.items()))
    seeds = itertools.count(args.seed)
    sync = torch.cuda.synchronize if policy.generator.device.type == "cuda" else (lambda: None)
    state = over = prev = None

    def step_all() -> int:
        """One step of every game; returns the env steps played (games not over)."""
        nonlocal state, over, prev
        if over is None or bool(over.all()):
            state = games.reset([next(seeds) for _ in range(args.games)])
            over = torch.zeros(args.games, dtype=torch.bool, device=games.device)
            prev = {g: torch.full_like(s.alive, -1, dtype=torch.long) for g, s in state.items()}
        actions = {g: acting[g].act(s, prev[g]) for g, s in state.items()}
        result = games.step(actions)
        played = args.games - int(over.sum())
        state, over, prev = result.groups, result.done, actions
        return played

    for _ in range(args.warmup):
        step_all()
    sync()
    start = time.perf_counter()
    played = sum(step_all() for _ in range(args.steps))
    sync()
    return played / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    # magent2's engine reads its OpenMP threads when it loads
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    print(f"backend {args.backend}, {args.game} map {args.map_size}, {args.games} games, "
          f"device {args.device}, {args.threads} threads, "
          f"{f'env threads {args.env_threads}, ' if args.env_threads else ''}"
          f"{f'training {args.train}' if args.train else f'policy {args.policy}'}, "
          f"{args.steps} steps{', compiled' if args.compile else ''}; {platform.machine()}, "
          f"torch {torch.__version__}")
    if args.train:
        rate = training_rate(args)
    elif args.policy != "random":
        rate = policy_rate(args)
    else:
        rate = (magent2_rate if args.backend == "magent2" else torch_rate)(args)
    print(f"env steps/s: {rate:.1f}")


if __name__ == "__main__":
    main()
