"""Training runs side by side in one process (``train_together``) against the same runs trained
one after another (``train``).

    python benchmarks/train_together.py [--runs 4] [--algo cmfq] [--backend torch]
        [--map-size 20] [--max-steps 100] [--rounds 2] [--games 1] [--device cpu] [--threads 1]

The runs are seeds 0..runs-1 of one config. Each way's rate is the env steps of all its runs over
its wall time, everything included (building the games and networks, every round, the
checkpoints), and over the process's CPU time (steadier on a shared machine). The last lines give
both rates, their ratios, and whether each run ended with the same metrics (but the speed) and
weights both ways, as it must.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--algo", choices=("il", "mfq", "amfq", "cmfq"), default="cmfq")
    parser.add_argument("--backend", choices=("magent2", "torch"), default="torch")
    parser.add_argument("--game", choices=("battle", "tiger-deer"), default="battle")
    parser.add_argument("--map-size", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--games", type=int, default=1, help="games_per_round of each run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--together-first", action="store_true",
                        help="train side by side first (default: one after another first; the "
                        "second way finds the process warm)")
    return parser.parse_args()


def configs(args, out: Path) -> list:
    from cmfq.training.config import TrainConfig

    return [
        TrainConfig(algo=args.algo, env=args.game, env_backend=args.backend,
                    map_size=args.map_size, max_steps=args.max_steps, rounds=args.rounds,
                    games_per_round=args.games, device=args.device, threads=args.threads,
                    seed=seed, save_every=args.rounds, out=str(out / f"seed={seed}"))
        for seed in range(args.runs)
    ]


def env_steps(run: Path) -> int:
    with open(run / "metrics.csv", newline="") as f:
        return sum(int(float(row["steps"])) for row in csv.DictReader(f))


def same_run(a: Path, b: Path) -> bool:
    """The same metrics but the speed, and the same final weights."""
    import torch

    from cmfq.training.checkpoint import load_checkpoint

    def rows(run: Path) -> list[dict]:
        with open(run / "metrics.csv", newline="") as f:
            return [{k: v for k, v in row.items() if k != "steps_per_s"}
                    for row in csv.DictReader(f)]

    wa, wb = load_checkpoint(a / "last.pt").model, load_checkpoint(b / "last.pt").model
    return rows(a) == rows(b) and wa.keys() == wb.keys() and all(
        torch.equal(wa[k], wb[k]) for k in wa)


def main() -> None:
    args = parse_args()
    from cmfq.training.together import train_together
    from cmfq.training.trainer import train

    def timed(way):
        began, cpu = time.perf_counter(), time.process_time()
        return way(), time.perf_counter() - began, time.process_time() - cpu

    with tempfile.TemporaryDirectory() as tmp:
        ways = {
            "apart": lambda: [train(config, progress=False)
                              for config in configs(args, Path(tmp) / "apart")],
            "together": lambda: train_together(configs(args, Path(tmp) / "together"),
                                               progress=False),
        }
        order = ["together", "apart"] if args.together_first else ["apart", "together"]
        done = {name: timed(ways[name]) for name in order}
        (apart, apart_s, apart_cpu), (together, together_s, together_cpu) = (
            done["apart"], done["together"])
        steps = sum(env_steps(run) for run in apart)
        same = all(same_run(a, b) for a, b in zip(apart, together, strict=True))
    print(f"{args.runs} runs of {args.algo}, {args.backend} backend, map {args.map_size}, "
          f"{args.rounds} rounds of {args.games} game(s) of at most {args.max_steps} steps, "
          f"{args.device}, {args.threads} thread(s): {steps} env steps")
    for way, seconds, cpu in (("one after another", apart_s, apart_cpu),
                              ("side by side", together_s, together_cpu)):
        print(f"{way}: {seconds:.1f} s, {steps / seconds:.1f} env steps/s "
              f"({cpu:.1f} CPU s, {steps / cpu:.1f} env steps a CPU second)")
    print(f"ratio: {apart_s / together_s:.2f} (CPU time: {apart_cpu / together_cpu:.2f}); "
          f"same metrics and weights: {same}")


if __name__ == "__main__":
    main()
