"""Training on either env backend (``env_backend``).

The magent2 backend trains bit for bit as the code before the env backends existed: a short run
of each env, made here by that commit's own code (``git archive`` of ``BASE``, with this build's
extension) and by today's, gives the same metrics and weights. ``BASE`` is the commit before the
env interface came in; a later change that alters what a run computes on purpose (an algorithm, a
default) moves it to its own commit.

The torch backend trains, resumes exactly, and its checkpoints play on magent2."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_same_run

import cmfq
from cmfq.algos import RandomPolicy
from cmfq.cli import main
from cmfq.envs import make_env, make_games
from cmfq.evaluation.match import Arena, Game
from cmfq.evaluation.render import render_game
from cmfq.training.checkpoint import load_checkpoint
from cmfq.training.config import TrainConfig
from cmfq.training.metrics import read_metrics
from cmfq.training.replay import ReplayBuffer
from cmfq.training.rollout import play_games
from cmfq.training.trainer import resume, train

BASE = "04e033ddb0d71696ea6684d01e040f073128609e"
REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "battle-cmfq": dict(env="battle", algo="cmfq", map_size=12, max_steps=25, rounds=2,
                        games_per_round=2, batch_size=32, replay_rows=4000, save_every=1),
    "tiger-deer-mfq": dict(env="tiger-deer", algo="mfq", map_size=14, max_steps=20, rounds=2,
                           games_per_round=2, batch_size=32, replay_rows=4000, save_every=1),
}
TRAIN = ("import sys, json; from cmfq.training.config import TrainConfig; "
         "from cmfq.training.trainer import train; "
         "train(TrainConfig(**json.loads(sys.argv[1])), progress=False)")


def base_source(tmp: Path) -> Path:
    """``BASE``'s ``src`` with this build's compiled extension (the C++ is the same)."""
    found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{BASE}^{{commit}}"],
                           capture_output=True)
    if found.returncode:
        pytest.skip(f"the git history has no {BASE[:10]} (a shallow clone)")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BASE, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    package = Path(cmfq.__file__).parent
    for built in package.glob("_C*"):
        shutil.copy(built, tmp / "src" / "cmfq" / built.name)
    return tmp / "src"


def train_with(source: Path, out: Path, config: dict) -> None:
    """A run of ``config`` in ``out`` by the code in ``source``, in a process of its own."""
    settings = json.dumps({**config, "out": str(out), "device": "cpu"})
    done = subprocess.run([sys.executable, "-c", TRAIN, settings], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(source)})
    assert done.returncode == 0, done.stderr[-3000:]


def metrics(run: Path) -> list[dict[str, str]]:
    """The metrics rows but the speed (which changes from run to run)."""
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "steps_per_s"} for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_magent2_runs_are_what_they_were(tmp_path, name):
    base = base_source(tmp_path)
    config = {**RUNS[name], "env_backend": "magent2"}
    train_with(base, tmp_path / "before", RUNS[name])
    train_with(Path(cmfq.__file__).parents[1], tmp_path / "now", config)
    assert metrics(tmp_path / "now") == metrics(tmp_path / "before")
    assert len(metrics(tmp_path / "now")) == RUNS[name]["rounds"]
    for saved in ("last.pt", "resume.pt"):
        before = torch.load(tmp_path / "before" / saved, weights_only=False)
        now = torch.load(tmp_path / "now" / saved, weights_only=False)
        for key in ("model", "training_state"):
            flat_before, flat_now = flatten(before.get(key)), flatten(now.get(key))
            assert flat_before.keys() == flat_now.keys(), (saved, key)
            for path, value in flat_before.items():
                assert equal(value, flat_now[path]), (saved, key, path)


def flatten(value, prefix: str = "") -> dict:
    """Nested dicts and lists as {path: leaf}."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return {prefix: value}
    return {k: v for key, item in items for k, v in flatten(item, f"{prefix}/{key}").items()}


def equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


TORCH = dict(env_backend="torch", map_size=12, max_steps=20, replay_rows=2000, save_every=1,
             device="cpu")


@pytest.mark.parametrize("env, algo", [("battle", "cmfq"), ("tiger-deer", "mfq")])
def test_the_torch_backend_trains_and_resumes_exactly(tmp_path, env, algo):
    config = dict(TORCH, env=env, algo=algo, rounds=3, temperature_decay_rounds=3,
                  games_per_round=2)
    straight = train(TrainConfig(out=str(tmp_path / "a"), **config), progress=False)
    cut = train(TrainConfig(out=str(tmp_path / "b"), **dict(config, rounds=2)), progress=False)
    resume(cut, rounds=3, progress=False)
    assert_same_run(straight, cut)
    rows = read_metrics(straight / "metrics.csv")
    assert all(r["updates"] > 0 and r["steps"] > 0 for r in rows)
    assert rows[-1]["buffer"] > rows[0]["buffer"]
    # Its checkpoint plays on the reference backend: the same game, observations and actions.
    ckpt = load_checkpoint(straight / "last.pt")
    assert ckpt.config.env_backend == "torch"
    board = make_env(env, 16, seed=0, max_steps=5)
    [result] = play_games([board], [{board.groups[0]: ckpt.policy(seed=0)}], seeds=[1])
    assert result.steps == 5


def test_the_backend_flag_and_its_errors(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--env-backend", "torch", "--algo", "il", "--map-size", "12",
                 "--max-steps", "10", "--rounds", "1", "--device", "cpu", "--out", str(run),
                 "--quiet"]) == 0
    assert TrainConfig.from_toml(run / "config.toml").env_backend == "torch"
    with pytest.raises(ValueError, match="env_backend torch plays"):
        TrainConfig(env="consensus", env_backend="torch")
    with pytest.raises(ValueError, match="no id embedding"):
        TrainConfig(env_backend="torch", id_embedding=True)
    assert main(["train", "--env-backend", "jax", "--quiet"]) == 2
    assert "env_backend" in capsys.readouterr().err


def test_a_torch_game_is_the_same_alone_or_among_others():
    seeds = (3, 4)

    def play(js):
        games = make_games("tiger-deer", 14, len(js), backend="torch", max_steps=15)
        buffer = ReplayBuffer(5000, games.specs["tiger"].n_actions)
        policies = [{"tiger": RandomPolicy(games.specs["tiger"].n_actions, seed=10 + j)}
                    for j in js]
        results = play_games(games, policies, seeds=[seeds[j] for j in js],
                             record=[{"tiger": buffer} for _ in js])
        return results, buffer.added

    alone = [play([j]) for j in range(2)]
    together, added = play([0, 1])
    assert together == [results[0] for results, _ in alone]
    assert added == sum(n for _, n in alone) > 0


@pytest.fixture(scope="module")
def torch_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "torch-battle"
    run = train(TrainConfig(out=str(out), algo="mfq", rounds=1, **dict(TORCH, max_steps=10)),
                progress=False)
    return str(run / "last.pt")


def test_tournament_games_on_the_torch_backend(tmp_path, torch_checkpoint, capsys):
    arena = Arena([torch_checkpoint, "random"], "battle", 12, env_backend="torch", max_steps=15)
    games = [Game((0, 1), 0, 5), Game((1, 0), 1, 6), Game((0, 1), 2, 7)]
    # a game depends on its players and seed only, as on magent2
    assert arena.play(games) == [arena.play([game])[0] for game in games]
    out = tmp_path / "report"
    assert main(["tournament", torch_checkpoint, "random", "--map-size", "12", "--games", "2",
                 "--max-steps", "10", "--env-backend", "torch", "--workers", "1",
                 "--out", str(out)]) == 0
    assert "env_backend" in (out / "report.json").read_text()
    with pytest.raises(ValueError, match="render with env_backend magent2"):
        render_game([torch_checkpoint, "random"], tmp_path / "x.gif", map_size=12,
                    env_options={"env_backend": "torch"})
