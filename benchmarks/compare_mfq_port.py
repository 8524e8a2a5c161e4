"""Env steps per second of ``cmfq train`` against the PyTorch port of the original MFQ code.

    python benchmarks/compare_mfq_port.py PATH/TO/mfrl_pytorch [--rounds 1] [--repeat 2]

PATH is a checkout of github.com/deligentfool/mfrl_pytorch, left as it is: the script copies it
to a temporary folder and makes there the two edits a user of today's magent2 makes (the env
import becomes magent2's ``battle_v4``, and the two commented lines of ``ValueNet.act`` that sample
actions from the Boltzmann policy are switched on). Then, back to back and ``--repeat`` times,
each trainer plays ``--rounds`` self-play rounds of the map-40 battle (64 agents a side, 400 steps)
in its own process on one thread (``OMP_NUM_THREADS=1``, torch threads 1), with the same updates
per env step: the port makes 2 x (new transitions) / 64 gradient steps of 64 at the end of a round;
cmfq with ``replay_ratio = 1`` and both sides' transitions in the replay (its default) makes
1 x (2 x the learner's transitions) / 64. Seconds count from the first reset to the end of the
last round's updates. Prints the figures and their ratio; cmfq's CMFQ is measured too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EDITS = {
    "train_battle.py": [
        ("from pettingzoo.magent import battle_v3", "from magent2.environments import battle_v4"),
        ("env = battle_v3.env(", "env = battle_v4.env("),
    ],
    "algo/base.py": [
        ("        #distribution = torch.distributions.Categorical(predict)\n"
         "        #actions = distribution.sample().detach().cpu().numpy()\n"
         "        actions = predict.max(1)[1].detach().cpu().numpy()\n",
         "        distribution = torch.distributions.Categorical(predict)\n"
         "        actions = distribution.sample().detach().cpu().numpy()\n"),
    ],
}

# Runs in the port's process: one thread, steps counted on magent2's engine, time from the first
# reset; moviepy (only for GIF replays, off here) is stubbed if it is not installed.
PORT_RUNNER = """
import json, runpy, sys, time, types
import torch
torch.set_num_threads(1)
try:
    import moviepy.editor  # noqa: F401
except ImportError:
    stub = types.ModuleType("moviepy.editor"); stub.ImageSequenceClip = None
    sys.modules["moviepy"] = types.ModuleType("moviepy"); sys.modules["moviepy.editor"] = stub
import magent2.gridworld as gw
counts = {"steps": 0, "start": None}
step, reset = gw.GridWorld.step, gw.GridWorld.reset
def counted_step(self):
    counts["steps"] += 1
    return step(self)
def timed_reset(self):
    if counts["start"] is None:
        counts["start"] = time.perf_counter()
    return reset(self)
gw.GridWorld.step, gw.GridWorld.reset = counted_step, timed_reset
sys.argv = ["train_battle.py", "--algo", "mfq", "--map_size", "40", "--max_steps", "400",
            "--n_round", sys.argv[1], "--save_every", "1000000", "--cuda", ""]
runpy.run_path("train_battle.py", run_name="__main__")
seconds = time.perf_counter() - counts["start"]
print(json.dumps({"steps": counts["steps"], "seconds": seconds}), file=sys.stderr)
"""


def prepare_port(source: Path, into: Path) -> Path:
    """A copy of the port with the two edits; raises if the port's text is not as expected."""
    port = into / "mfrl_pytorch"
    shutil.copytree(source, port, ignore=shutil.ignore_patterns(".git", "data"))
    for name, edits in EDITS.items():
        path = port / name
        text = path.read_text()
        for old, new in edits:
            if old not in text:
                raise SystemExit(f"{path}: expected text not found (another version?): {old!r}")
            text = text.replace(old, new)
        path.write_text(text)
    return port


def one_thread_env() -> dict:
    return os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_port(port: Path, rounds: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PORT_RUNNER, str(rounds)], cwd=port, env=one_thread_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    if done.returncode:
        raise SystemExit(f"the port failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stderr.strip().splitlines()[-1])


def run_cmfq(algo: str, rounds: int, out: Path) -> dict:
    command = [
        sys.executable, "-m", "cmfq.cli", "train", "--algo", algo, "--map-size", "40",
        "--max-steps", "400", "--rounds", str(rounds), "--replay-ratio", "1",
        "--learn-from-opponent", "--threads", "1", "--device", "cpu", "--quiet",
        "--out", str(out),
    ]
    done = subprocess.run(command, env=one_thread_env(), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"cmfq train failed:\n{done.stderr[-3000:]}")
    from cmfq.training.metrics import read_metrics
    from cmfq.training.run_folder import RunFolder

    rows = read_metrics(RunFolder(out).metrics_file)
    return {
        "steps": int(sum(r["steps"] for r in rows)),
        "seconds": sum(r["steps"] / r["steps_per_s"] for r in rows),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=Path, help="checkout of deligentfool/mfrl_pytorch")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of 400 steps per run")
    parser.add_argument("--repeat", type=int, default=2, help="back-to-back repetitions")
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; one thread per trainer",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        port = prepare_port(args.port, Path(tmp))
        for repeat in range(args.repeat):
            figures = {"port mfq": run_port(port, args.rounds)}
            for algo in ("mfq", "cmfq"):
                figures[f"cmfq {algo}"] = run_cmfq(algo, args.rounds, Path(tmp) / f"{algo}{repeat}")
            rate = {name: f["steps"] / f["seconds"] for name, f in figures.items()}
            print(f"run {repeat + 1}: " + ", ".join(
                f"{name} {rate[name]:.1f} env steps/s ({f['steps']} steps)"
                for name, f in figures.items()
            ), flush=True)
            print(f"  cmfq mfq / port mfq = {rate['cmfq mfq'] / rate['port mfq']:.2f}x; time per "
                  f"step cmfq / mfq = {rate['cmfq mfq'] / rate['cmfq cmfq']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
