"""Env steps per second of ``cmfq train`` against the PyTorch port of the original MFQ code.

    python benchmarks/compare_mfq_port.py PATH/TO/mfrl_pytorch [--rounds 1] [--repeat 2] \
        [--setting "" --setting "--train-dtype bfloat16 --compile-step"]

PATH is a checkout of github.com/deligentfool/mfrl_pytorch, left as it is: the script copies it
to a temporary folder and makes there the two edits a user of today's magent2 makes (the env
import becomes magent2's ``battle_v4``, and the two commented lines of ``ValueNet.act`` that sample
actions from the Boltzmann policy are switched on). Then, back to back and ``--repeat`` times,
each trainer plays ``--rounds`` self-play rounds of the map-40 battle (64 agents a side, 400 steps)
in its own process on one thread (``OMP_NUM_THREADS=1``, torch threads 1), with the same updates
per env step: the port makes 2 x (new transitions) / 64 gradient steps of 64 at the end of a round;
cmfq with ``replay_ratio = 1`` and both sides' transitions in the replay (its default) makes
1 x (2 x the learner's transitions) / 64. Seconds count from the first round's reset to the end
of the last round's updates. On a shared machine wall seconds depend on what else runs, so each
trainer also reports the CPU seconds its process spent in that span (the port: from the first
round's reset; cmfq: in its rounds' play and updates), and env steps per CPU-second are printed
beside env steps per second. Prints the figures and their ratio; cmfq's CMFQ is measured too.
Each ``--setting`` (``cmfq train`` flags added to the above; default: one run with none) runs both
algorithms. With more than one round, both trainers' rates over the rounds after the first, and
their ratio, are printed too: the steady state, without what the first round alone pays
(``compile_step``'s compilation, the port's warm-up).
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

# Runs in the port's process: one thread, steps counted on magent2's engine, wall and CPU time
# from its first round's reset (and from its second's); moviepy (only for GIF replays, off here)
# is stubbed if it is not installed.
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
counts = {"steps": 0}
marks = []  # (steps, wall, CPU seconds) at each reset, and at the end
step, reset = gw.GridWorld.step, gw.GridWorld.reset
def counted_step(self):
    counts["steps"] += 1
    return step(self)
def timed_reset(self):
    marks.append((counts["steps"], time.perf_counter(), time.process_time()))
    return reset(self)
gw.GridWorld.step, gw.GridWorld.reset = counted_step, timed_reset
rounds = int(sys.argv[1])
sys.argv = ["train_battle.py", "--algo", "mfq", "--map_size", "40", "--max_steps", "400",
            "--n_round", str(rounds), "--save_every", "1000000", "--cuda", ""]
runpy.run_path("train_battle.py", run_name="__main__")
marks.append((counts["steps"], time.perf_counter(), time.process_time()))
def span(first, last):
    return {"steps": last[0] - first[0], "seconds": last[1] - first[1],
            "cpu_seconds": last[2] - first[2]}
starts = marks[-rounds - 1:-1]  # a round starts at its reset; an earlier reset is set-up
print(json.dumps({**span(starts[0], marks[-1]),
                  "later": span(starts[1], marks[-1]) if rounds > 1 else None}), file=sys.stderr)
"""

# Runs ``cmfq train`` in-process and adds up the CPU time of its rounds' play and updates.
CMFQ_RUNNER = """
import json, sys, time
import cmfq.training.trainer as trainer
from cmfq.cli import main
from cmfq.training.learner import Learner
spent = []  # per round: a round plays its games, then learns
def timed(function, starts_round):
    def timed_call(*args, **kwargs):
        began = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            if starts_round:
                spent.append(0.0)
            spent[-1] += time.process_time() - began
    return timed_call
trainer.play_games = timed(trainer.play_games, True)
Learner.learn = timed(Learner.learn, False)
main(sys.argv[1:])
print(json.dumps({"cpu_seconds": spent}), file=sys.stderr)
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


def run_cmfq(algo: str, rounds: int, out: Path, setting: str) -> dict:
    """cmfq's figures over all rounds, and (``later``) over the rounds after the first."""
    command = [
        sys.executable, "-c", CMFQ_RUNNER, "train", "--algo", algo, "--map-size", "40",
        "--max-steps", "400", "--rounds", str(rounds), "--replay-ratio", "1",
        "--learn-from-opponent", "--threads", "1", "--device", "cpu", "--quiet",
        "--out", str(out), *setting.split(),
    ]
    done = subprocess.run(command, env=one_thread_env(), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"cmfq train failed:\n{done.stderr[-3000:]}")
    from cmfq.training.metrics import read_metrics
    from cmfq.training.run_folder import RunFolder

    rows = read_metrics(RunFolder(out).metrics_file)
    cpu = json.loads(done.stderr.strip().splitlines()[-1])["cpu_seconds"]

    def figures(first: int) -> dict:
        return {
            "steps": int(sum(r["steps"] for r in rows[first:])),
            "seconds": sum(r["steps"] / r["steps_per_s"] for r in rows[first:]),
            "cpu_seconds": sum(cpu[first:]),
        }

    return {**figures(0), "later": figures(1) if rounds > 1 else None}


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
    parser.add_argument("--setting", action="append", default=None,
                        help='cmfq train flags of one setting, e.g. "--train-dtype bfloat16" '
                        '(repeat for several; default: the defaults alone)')
    args = parser.parse_args()
    settings = args.setting or [""]
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; one thread per trainer",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        port = prepare_port(args.port, Path(tmp))
        for repeat in range(args.repeat):
            figures = {"port mfq": run_port(port, args.rounds)}
            for number, setting in enumerate(settings):
                for algo in ("mfq", "cmfq"):
                    figures[f"cmfq {algo} [{setting or 'defaults'}]"] = run_cmfq(
                        algo, args.rounds, Path(tmp) / f"{algo}-{number}-{repeat}", setting)
            print(f"run {repeat + 1}:", flush=True)
            for name, f in figures.items():
                print(f"  {name}: {describe(f)}", flush=True)
                if f.get("later"):
                    print(f"    after the first round: {describe(f['later'])}", flush=True)
            port_rates = rates(figures["port mfq"])
            for setting in settings:
                mfq = figures[f"cmfq mfq [{setting or 'defaults'}]"]
                cmfq = figures[f"cmfq cmfq [{setting or 'defaults'}]"]
                ratio = [a / b for a, b in zip(rates(mfq), port_rates)]
                print(f"  [{setting or 'defaults'}] cmfq mfq / port mfq = {ratio[0]:.2f}x (per "
                      f"CPU-second {ratio[1]:.2f}x); time per step cmfq / mfq = "
                      f"{rates(mfq)[0] / rates(cmfq)[0]:.2f}x", flush=True)
                if mfq["later"]:
                    port_later = rates(figures["port mfq"]["later"])
                    later = [a / b for a, b in zip(rates(mfq["later"]), port_later)]
                    print(f"    after the first round, cmfq mfq / port mfq = {later[0]:.2f}x (per "
                          f"CPU-second {later[1]:.2f}x)", flush=True)


def rates(figures: dict) -> tuple[float, float]:
    """Env steps per second and per CPU-second."""
    return figures["steps"] / figures["seconds"], figures["steps"] / figures["cpu_seconds"]


def describe(figures: dict) -> str:
    per_second, per_cpu_second = rates(figures)
    return (f"{per_second:.1f} env steps/s, {per_cpu_second:.1f} per CPU-second "
            f"({figures['steps']} steps)")


if __name__ == "__main__":
    main()
