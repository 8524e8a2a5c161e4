"""Several training runs sharing one GPU: their aggregate env steps/s.

    python benchmarks/shared_gpu_runs.py OUT.json [--runs 1 4 8] [--rounds 3] [--max-steps 100]

For each N of ``--runs``, N ``cmfq train`` processes start at once on ``--device`` (each with its
own seed and run folder, one CPU thread, the study's battle: map 20, 16 agents a side, self-play,
the default update schedule), as a sweep with ``gpus_per_run = 1/N`` would place them, but
without Ray: plain processes. A run's rate is that of its rounds after the first (the first
captures the CUDA graph and warms the device); the aggregate is the sum of the runs' rates, and
``wall_steps_per_s`` is all the runs' env steps over the wall time from the launch to the last
exit (imports and CUDA start-up included). Each N is written to OUT.json as soon as it is done, so
a later N that fails or times out (``--timeout`` seconds) leaves the earlier figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cmfq.training.metrics import read_metrics


def run_together(n: int, args: argparse.Namespace, folder: Path) -> dict:
    """N runs started at once; their rates and the aggregate."""
    outs = [folder / f"n{n}-run{i}" for i in range(n)]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "cmfq.cli", "train", "--algo", args.algo, "--map-size", "20",
             "--max-steps", str(args.max_steps), "--rounds", str(args.rounds), "--seed", str(i),
             "--device", args.device, "--threads", "1", "--save-every", str(args.rounds),
             "--quiet", "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for i, out in enumerate(outs)
    ]
    errors = []
    for process in processes:
        try:
            _, stderr = process.communicate(timeout=max(1.0, args.timeout - (
                time.perf_counter() - started)))
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
            errors.append("timed out")
            continue
        if process.returncode:
            errors.append(stderr[-2000:])
    wall = time.perf_counter() - started
    rates, steps = [], 0
    for out in outs:
        if not (out / "metrics.csv").is_file():
            continue
        rows = read_metrics(out / "metrics.csv")
        steps += sum(row["steps"] for row in rows)
        later = rows[1:] or rows
        seconds = sum(row["steps"] / row["steps_per_s"] for row in later)
        rates.append(sum(row["steps"] for row in later) / seconds)
    return {
        "runs": n,
        "finished": len(rates),
        "steps_per_s_each": rates,
        "aggregate_steps_per_s": sum(rates),
        "wall_seconds": wall,
        "wall_steps_per_s": steps / wall,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="JSON file to write")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--algo", default="cmfq")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for each N")
    args = parser.parse_args()
    record = {"setup": {k: v for k, v in vars(args).items() if k != "out"}, "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.runs:
            result = run_together(n, args, Path(tmp))
            record["results"].append(result)
            args.out.write_text(json.dumps(record, indent=1))
            print(f"{n} runs at once: {result['aggregate_steps_per_s']:.0f} env steps/s together "
                  f"({result['finished']} finished; wall {result['wall_seconds']:.0f} s, "
                  f"{result['wall_steps_per_s']:.0f} env steps/s over the wall time)"
                  + (f"; errors: {result['errors']}" if result["errors"] else ""), flush=True)


if __name__ == "__main__":
    main()
