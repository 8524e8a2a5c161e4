"""What subnormal floats cost a CPU update, and what flushing them changes.

    python benchmarks/subnormal_updates.py [--rounds 14]

First torch's fused Adam over 0.73 M parameters (the battle network's size), one thread, with
none or half of its first moments subnormal (as Adam leaves the moments of weights whose gradient
stays zero), flushed or not. Then, with ``--rounds``, two default trainings of the map-40 battle
(mfq, 100 steps a round, seed 0, one thread), one with the learner's flushing
(``cmfq.training.learner.subnormals_flushed``) switched off: each round's env steps/s side by
side, and whether the two runs' metrics and final weights are the same, bit for bit.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

import cmfq.training.learner as learner
from cmfq.training.config import TrainConfig
from cmfq.training.metrics import read_metrics
from cmfq.training.run_folder import RunFolder
from cmfq.training.trainer import train

PARAMETERS = 730_000
STEPS = 30


def adam_step_ms(subnormal_fraction: float, flush: bool) -> float:
    """Median milliseconds of one fused Adam step, a share of the first moments subnormal."""
    weights = torch.nn.Parameter(torch.randn(PARAMETERS))
    optimizer = torch.optim.Adam([weights], lr=1e-4, fused=True)
    weights.grad = torch.randn(PARAMETERS)
    optimizer.step()
    state = optimizer.state[weights]
    dead = int(PARAMETERS * subnormal_fraction)
    state["exp_avg_sq"][:dead] = 1e-30
    weights.grad[:dead] = 0.0  # these weights' moments only decay
    times = []
    with learner.subnormals_flushed() if flush else contextlib.nullcontext():
        for _ in range(STEPS):
            state["exp_avg"][:dead] = 1e-39
            start = time.perf_counter()
            optimizer.step()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def train_run(folder: Path, rounds: int, flush: bool) -> Path:
    """A default map-40 training, with or without the learner's flushing."""
    config = TrainConfig(algo="mfq", env="battle", map_size=40, max_steps=100, rounds=rounds,
                         seed=0, threads=1, device="cpu", save_every=rounds, out=str(folder))
    kept = learner.subnormals_flushed
    if not flush:
        learner.subnormals_flushed = contextlib.nullcontext
    try:
        return train(config, progress=False)
    finally:
        learner.subnormals_flushed = kept


def compare_trainings(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runs = {flush: train_run(Path(tmp) / f"flush={flush}", rounds, flush)
                for flush in (False, True)}
        metrics = {flush: read_metrics(RunFolder(run).metrics_file) for flush, run in runs.items()}
        print("round  env steps/s without flush  with flush")
        for plain, flushed in zip(metrics[False], metrics[True], strict=True):
            print(f"{int(plain['round']):>5}  {float(plain['steps_per_s']):>25.1f}  "
                  f"{float(flushed['steps_per_s']):>10.1f}")
        same_metrics = all(
            a[name] == b[name] or (math.isnan(a[name]) and math.isnan(b[name]))
            for a, b in zip(metrics[False], metrics[True], strict=True)
            for name in a if name != "steps_per_s"
        )
        weights = {flush: torch.load(RunFolder(run).last_file, weights_only=True)["model"]
                   for flush, run in runs.items()}
        same_weights = all(torch.equal(weights[False][name], weights[True][name])
                           for name in weights[False])
        print(f"same metrics: {same_metrics}; same final weights: {same_weights}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=0,
                        help="also train twice for this many rounds (default: 0, Adam alone)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for fraction in (0.0, 0.5):
        for flush in (False, True):
            print(f"fused Adam, {fraction:.0%} of the first moments subnormal, flushed {flush}: "
                  f"{adam_step_ms(fraction, flush):.2f} ms a step")
    if args.rounds:
        compare_trainings(args.rounds)


if __name__ == "__main__":
    main()
