"""How fast a game steps with no learning: magent2 on the host against the torch backend.

    python benchmarks/env_speed.py --backend magent2|torch [--game battle] [--map-size 40]
        [--games 8] [--device cpu] [--threads 2] [--policy random] [--steps 400]

``--games`` games step in lockstep: magent2's one after another in this process (as training
does), the torch backend's as one batch on ``--device``. Every live agent acts (``--policy random``:
uniform actions, drawn on the backend's side: numpy for magent2, torch on the device), every step
computes every group's observations, and a game that ends starts again. After ``--warmup`` steps,
``--steps`` steps are timed; an env step is one step of one game. The last line is
``env steps/s: N``.
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
    parser.add_argument("--policy", choices=("random",), default="random")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--compile", action="store_true",
                        help="torch backend: compile the observation (torch.compile)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


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
    game = game_cls(args.map_size, device=args.device, compile=args.compile)
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


def main() -> None:
    args = parse_args()
    # magent2's engine reads its OpenMP threads when it loads
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    print(f"backend {args.backend}, {args.game} map {args.map_size}, {args.games} games, "
          f"device {args.device}, {args.threads} threads, policy {args.policy}, "
          f"{args.steps} steps{', compiled' if args.compile else ''}; {platform.machine()}, "
          f"torch {torch.__version__}")
    rate = (magent2_rate if args.backend == "magent2" else torch_rate)(args)
    print(f"env steps/s: {rate:.1f}")


if __name__ == "__main__":
    main()
