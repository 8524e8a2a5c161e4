"""Sweeps and tournaments on a local Ray instance, started once for the module: tiny runs (a 12²
map, 20 steps a round, 3 rounds) checked against plain ``cmfq train`` runs and local processes."""

import contextlib
import csv
import dataclasses
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from helpers import assert_same_run

from cmfq.cli import main
from cmfq.sweep.runner import EXIT_AT_ROUND_VAR, process_chunks, run_sweep, train_runs
from cmfq.sweep.spec import Resources, SweepSpec, run_name
from cmfq.training.checkpoint import load_checkpoint
from cmfq.training.config import TrainConfig
from cmfq.training.trainer import train

TINY = dict(map_size=12, max_steps=20, rounds=3, replay_rows=2000, save_every=1)
GRID = {"algo": ["il", "mfq"], "seed": [0, 1]}
SWEEP_FILE = """\
[base]
map_size = 12
max_steps = 20
rounds = 3
replay_rows = 2000
save_every = 1

[grid]
algo = ["il", "mfq"]
seed = [0, 1]
"""
NAMES = ["algo=il,seed=0", "algo=il,seed=1", "algo=mfq,seed=0", "algo=mfq,seed=1"]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(local_ray, tmp_path_factory):
    """The 2x2 sweep, uninterrupted."""
    out = tmp_path_factory.mktemp("sweep")
    result = run_sweep(SweepSpec(TINY, GRID, Resources()), out, progress=False)
    assert result.failed == {}
    return out


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_relative_out_is_kept_relative_in_the_runs_configs(local_ray, tmp_path, monkeypatch):
    # The study commits its run folders: their configs must not name the machine's folders.
    monkeypatch.chdir(tmp_path)
    spec = SweepSpec(dict(TINY, rounds=1), {"algo": ["il"]}, Resources())
    assert run_sweep(spec, Path("runs"), progress=False).failed == {}
    saved = TrainConfig.from_toml(Path("runs/algo=il/config.toml"), written_by_cmfq=True)
    assert saved.out == "runs/algo=il"
    assert load_checkpoint("runs/algo=il/last.pt").config.out == "runs/algo=il"


def test_a_grid_trains_every_run_as_cmfq_train_would(reference, tmp_path):
    assert sorted(p.name for p in reference.iterdir() if p.is_dir()) == NAMES
    summary = read_csv(reference / "summary.csv")
    assert [row["run"] for row in summary] == NAMES
    for row in summary:
        *_, last = read_csv(reference / row["run"] / "metrics.csv")
        assert row == {"run": row["run"], "algo": row["algo"], "seed": row["seed"], **last}
        assert int(last["round"]) == TINY["rounds"] - 1
        saved = TrainConfig.from_toml(reference / row["run"] / "config.toml")
        assert (saved.algo, str(saved.seed)) == (row["algo"], row["seed"])
    assert (reference / "summary.md").read_text().count("| algo=") == len(NAMES)

    plain = train(TrainConfig(algo="mfq", seed=1, out=str(tmp_path / "plain"), **TINY),
                  progress=False)
    assert_same_run(reference / "algo=mfq,seed=1", plain)
    assert {p.name for p in plain.iterdir()} == {
        p.name for p in (reference / "algo=mfq,seed=1").iterdir()}

    # Started again, the sweep finds every run finished and trains nothing.
    again = run_sweep(SweepSpec(TINY, GRID, Resources()), reference, progress=False)
    assert again.trained == [] and again.finished == NAMES


def test_runs_trained_several_to_a_process_are_those_trained_one_to_a_process(reference, tmp_path):
    spec = SweepSpec(TINY, GRID, Resources(runs_per_process=2))
    assert [[run.name for run in chunk] for chunk in process_chunks(spec.runs(tmp_path), 2)] == [
        NAMES[:2], NAMES[2:]]
    result = run_sweep(spec, tmp_path, progress=False)
    assert result.failed == {} and result.trained == NAMES
    for name in NAMES:
        assert_same_run(reference / name, tmp_path / name)


def test_a_process_takes_runs_that_share_their_batch_and_round(tmp_path):
    grid = {"seed": [0, 1, 2], "map_size": [12, 14]}
    runs = SweepSpec(dict(TINY, rounds=2), grid, Resources()).runs(tmp_path)
    names = [run.name for run in runs]
    # seed=1,map_size=12 has played a round: it goes on from round 1, alone.
    train(dataclasses.replace(runs[2].config, rounds=1), progress=False)
    chunks = [[run.name for run in chunk] for chunk in process_chunks(runs, 2)]
    assert chunks == [[names[0], names[4]], [names[1], names[3]], [names[2]], [names[5]]]
    assert process_chunks(runs, 1) == [[run] for run in runs]


def test_a_process_whose_runs_stopped_at_different_rounds_trains_them_in_turn(reference, tmp_path):
    # As a worker killed between its runs' checkpoints leaves them: one a round ahead.
    runs = [run for run in SweepSpec(TINY, GRID, Resources()).runs(tmp_path)
            if run.name in NAMES[2:]]
    train(dataclasses.replace(runs[0].config, rounds=1, temperature_decay_rounds=TINY["rounds"]),
          progress=False)
    train_runs([run.config.to_dict() for run in runs], str(tmp_path))
    for run in runs:
        assert_same_run(reference / run.name, tmp_path / run.name)


def test_plot_and_tournament_take_the_summary(reference, tmp_path, capsys):
    summary = str(reference / "summary.csv")
    assert main(["plot", summary, "--out", str(tmp_path / "curves.png")]) == 0
    assert "of 4 runs" in capsys.readouterr().out

    # A tournament on Ray gives the same games as one in this process.
    common = [summary, "--map-size", "12", "--max-steps", "10", "--games", "2", "--seed", "5"]
    assert main(["tournament", *common, "--workers", "1", "--out", str(tmp_path / "local")]) == 0
    assert main(["tournament", *common, "--address", "local", "--out", str(tmp_path / "ray")]) == 0
    local = read_csv(tmp_path / "local" / "games.csv")
    remote = read_csv(tmp_path / "ray" / "games.csv")
    assert len(local) == 6 * 2 and local == remote
    assert {row["a"] for row in local} | {row["b"] for row in local} == set(NAMES)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _descendants(pid: int) -> list[int]:
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process under it, as a power cut would: the children first,
    while they can still be found through their parents, until none is left alive."""
    while live := [p for p in _descendants(pid) if _alive(p)]:
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def test_a_killed_sweep_started_again_ends_as_an_uninterrupted_one(reference, tmp_path):
    (tmp_path / "sweep.toml").write_text(SWEEP_FILE)
    out = tmp_path / "runs"
    # Its own Ray instance, so that the kill takes the sweep's driver, Ray and workers at once.
    driver = subprocess.Popen(
        [sys.executable, "-m", "cmfq.cli", "sweep", str(tmp_path / "sweep.toml"), "--out",
         str(out), "--quiet", "--address", "local"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not glob.glob(str(out / "*" / "checkpoints" / "round_00002.pt")):
            assert driver.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        kill_tree(driver.pid)
        driver.wait()
    finished = [p for p in out.glob("*/last.pt") if load_checkpoint(p).round == TINY["rounds"]]
    assert len(finished) < len(NAMES)

    result = run_sweep(SweepSpec.from_toml(tmp_path / "sweep.toml"), out, progress=False)
    assert result.failed == {} and result.finished == NAMES
    for name in NAMES:
        assert_same_run(reference / name, out / name)
    assert read_csv(out / "summary.csv")[0].keys() == read_csv(reference / "summary.csv")[0].keys()


def test_a_worker_that_dies_is_retried_and_resumes(reference, tmp_path, monkeypatch):
    grid = {"algo": ["mfq"], "seed": [0]}
    monkeypatch.setenv(EXIT_AT_ROUND_VAR, "2")
    # Without retries the run stops where its worker died...
    dead = run_sweep(SweepSpec(TINY, grid, Resources(max_retries=0)), tmp_path / "a",
                     progress=False)
    assert list(dead.failed) == ["algo=mfq,seed=0"] and dead.finished == []
    assert load_checkpoint(tmp_path / "a" / "algo=mfq,seed=0" / "last.pt").round == 2
    # ...with one, it is started again and resumes after round 2 (from scratch it would die there
    # again) to the weights of the uninterrupted run.
    result = run_sweep(SweepSpec(TINY, grid, Resources(max_retries=1)), tmp_path / "b",
                       progress=False)
    assert result.failed == {} and result.trained == ["algo=mfq,seed=0"]
    assert_same_run(reference / "algo=mfq,seed=0", tmp_path / "b" / "algo=mfq,seed=0")


def sweep_file(folder, text) -> SweepSpec:
    """The sweep of a file ``s.toml`` in ``folder`` holding ``text``."""
    (folder / "s.toml").write_text(text)
    return SweepSpec.from_toml(folder / "s.toml")


def test_sweep_file_errors_name_the_key(tmp_path):
    spec = partial(sweep_file, tmp_path)

    with pytest.raises(ValueError, match=r"\[grid\] has unknown keys \['sede'\]"):
        spec("[grid]\nsede = [0, 1]\n")
    with pytest.raises(ValueError, match="grid.seed must be a non-empty list"):
        spec("[grid]\nseed = 3\n")
    with pytest.raises(ValueError, match=r"\[base\] has unknown keys \['out'\]"):
        spec('[base]\nout = "x"\n')
    with pytest.raises(ValueError, match=r"\['seed'\] both in"):
        spec("[base]\nseed = 1\n[grid]\nseed = [0, 1]\n")
    with pytest.raises(ValueError, match="resources.gpus_per_run must be >= 0"):
        spec("[resources]\ngpus_per_run = -1\n")
    with pytest.raises(ValueError, match="resources.runs_per_process must be an integer >= 1"):
        spec("[resources]\nruns_per_process = 0\n")
    with pytest.raises(ValueError, match=r"run algo=dqn: algo must be one of"):
        spec('[grid]\nalgo = ["dqn"]\n').runs(tmp_path)
    with pytest.raises(ValueError, match="same run folder names"):
        spec('[grid]\nopponent = ["a/b", "a-b"]\n').runs(tmp_path)
    # A train config file is the base's starting point; [base] overrides it.
    (tmp_path / "train.toml").write_text("map_size = 30\nrounds = 7\n")
    run, = spec('config = "train.toml"\n[base]\nrounds = 9\n').runs(tmp_path)
    assert (run.name, run.config.map_size, run.config.rounds) == ("run", 30, 9)
    assert run_name({"lr": 0.001, "minimap_mode": True}) == "lr=0.001,minimap_mode=true"
    # A former field name still works, and still names the run folders as before.
    with pytest.warns(FutureWarning, match="'envs' is now 'games_per_round'"):
        run, = spec("[grid]\nenvs = [2]\n").runs(tmp_path)
    assert (run.name, run.config.games_per_round) == ("envs=2", 2)


def test_variants_set_several_fields_and_name_their_runs(tmp_path):
    (tmp_path / "s.toml").write_text(
        '[base]\nrounds = 3\n[grid]\nseed = [0, 1]\nvariant = ["mfq", "relative"]\n'
        '[variants.mfq]\nalgo = "mfq"\n'
        '[variants.relative]\nalgo = "cmfq"\nweighting = "relative"\n')
    runs = SweepSpec.from_toml(tmp_path / "s.toml").runs(tmp_path)
    assert [r.name for r in runs] == ["seed=0,variant=mfq", "seed=0,variant=relative",
                                      "seed=1,variant=mfq", "seed=1,variant=relative"]
    relative = runs[3].config
    assert (relative.algo, relative.weighting, relative.label, relative.seed) == (
        "cmfq", "relative", "relative", 1)
    assert (runs[0].config.algo, runs[0].config.weighting) == ("mfq", "proportional")

    spec = partial(sweep_file, tmp_path)

    with pytest.raises(ValueError, match=r"names of \[variants\] \(\['a'\]\), not \['b'\]"):
        spec('[grid]\nvariant = ["a", "b"]\n[variants.a]\nalgo = "il"\n')
    with pytest.raises(ValueError, match="grid.variant must list"):
        spec('[grid]\nseed = [0]\n[variants.a]\nalgo = "il"\n')
    with pytest.raises(ValueError, match=r"\[variants.a\] sets \['seed'\], which the grid"):
        spec('[grid]\nseed = [0]\nvariant = ["a"]\n[variants.a]\nseed = 3\n')
    with pytest.raises(ValueError, match=r"\[variants.a\] has unknown keys \['algoo'\]"):
        spec('[grid]\nvariant = ["a"]\n[variants.a]\nalgoo = "il"\n')


def test_the_cli_on_a_finished_sweep_writes_its_summary(reference, tmp_path):
    (tmp_path / "sweep.toml").write_text(SWEEP_FILE)
    out = tmp_path / "runs"
    shutil.copytree(reference, out)
    (out / "summary.csv").unlink()
    assert main(["sweep", str(tmp_path / "sweep.toml"), "--out", str(out), "--quiet"]) == 0
    assert read_csv(out / "summary.csv") == read_csv(reference / "summary.csv")


def test_cmfq_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    code = ("import sys\nfrom cmfq.cli import main\ntry: main(['--help'])\n"
            "except SystemExit: pass\nassert 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    (tmp_path / "s.toml").write_text(SWEEP_FILE)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "runs")]) == 2
    assert 'pip install "cmfq[ray]"' in capsys.readouterr().err


def test_the_example_sweep_is_the_study_grid():
    path = Path(__file__).parents[1] / "configs" / "sweep-battle.toml"
    runs = SweepSpec.from_toml(path).runs(Path("runs/battle"))
    assert len(runs) == 4 * 5 and runs[0].name == "algo=il,seed=0"
    assert {(r.config.map_size, r.config.rounds) for r in runs} == {(40, 2000)}
