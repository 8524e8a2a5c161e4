import dataclasses
import pickle

import numpy as np
import pytest
import torch
from helpers import assert_same_run

from cmfq.algos import ALGOS, Policy, make_algorithm
from cmfq.cli import main
from cmfq.envs import make_env
from cmfq.training.checkpoint import atomic_save, load_checkpoint
from cmfq.training.config import TrainConfig
from cmfq.training.metrics import read_metrics
from cmfq.training.rollout import play_round
from cmfq.training.trainer import resume, train

TINY = dict(map_size=12, max_steps=20, rounds=2, buffer_size=2000, save_every=1)


@pytest.mark.parametrize("env", ["battle", "tiger-deer"])
@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_two_rounds_write_logs_and_a_loadable_checkpoint(tmp_path, algo, env):
    run = train(TrainConfig(algo=algo, env=env, out=str(tmp_path / "run"), **TINY), progress=False)
    rows = read_metrics(run / "metrics.csv")
    assert [r["round"] for r in rows] == [0, 1] and all(r["updates"] > 0 for r in rows)
    assert any(p.name.startswith("events") for p in (run / "tensorboard").iterdir())
    assert TrainConfig.from_toml(run / "config.toml").algo == algo
    ckpt = load_checkpoint(run / "checkpoints" / "round_00002.pt", algo=algo)
    assert (ckpt.algo, ckpt.env, ckpt.round) == (algo, env, 2)
    # The policy plays unchanged on a larger map with more agents.
    big = make_env(env, 24, seed=3, max_steps=5)
    result = play_round(big, {big.groups[0]: ckpt.policy(seed=0)}, seed=4)
    assert result.steps == 5 and result.groups[big.groups[0]].initial > ckpt.config.map_size // 3


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    cfg = dict(TINY, algo="mfq", rounds=3, temperature_decay_rounds=3)
    straight = train(TrainConfig(out=str(tmp_path / "a"), **cfg), progress=False)
    cut = train(TrainConfig(out=str(tmp_path / "b"), **dict(cfg, rounds=2)), progress=False)
    resume(cut, rounds=3, progress=False)
    a, b = read_metrics(straight / "metrics.csv"), read_metrics(cut / "metrics.csv")
    assert len(a) == len(b) == 3
    for row_a, row_b in zip(a, b, strict=True):
        row_a.pop("steps_per_s"), row_b.pop("steps_per_s")
        assert row_a == row_b
    wa, wb = load_checkpoint(straight / "last.pt").model, load_checkpoint(cut / "last.pt").model
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_it_again(tmp_path):
    config = TrainConfig(algo="il", **dict(TINY, save_every=5))
    straight = train(dataclasses.replace(config, out=str(tmp_path / "a")), progress=False)
    # Killed in its second round: its config and one row of metrics, no checkpoint.
    stopped = tmp_path / "b"
    stopped.mkdir()
    (stopped / "config.toml").write_text(
        dataclasses.replace(config, out=str(stopped)).resolved().to_toml())
    header, first_row, *_ = (straight / "metrics.csv").read_text().splitlines(keepends=True)
    (stopped / "metrics.csv").write_text(header + first_row)
    assert main(["train", "--resume", str(stopped), "--quiet"]) == 0
    assert_same_run(straight, stopped)


def test_checkpoint_errors(tmp_path):
    run = train(TrainConfig(algo="il", out=str(tmp_path / "run"), **TINY), progress=False)
    with pytest.raises(ValueError, match="holds a 'il' network"):
        load_checkpoint(run / "last.pt", algo="cmfq")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((run / "last.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable cmfq checkpoint"):
        load_checkpoint(corrupt)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_checkpoint_cannot_run_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "cmfq-checkpoint-1", "payload": _RunsCode()}, path)
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"x": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise pickle.PicklingError("boom")

    with pytest.raises(pickle.PicklingError):
        atomic_save({"x": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_cli_train_config_file_and_errors(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(TrainConfig(algo="mfq", **TINY).to_toml().replace('out = ""\n', ""))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--algo", "il", "--out", str(out),
                 "--quiet"]) == 0
    assert load_checkpoint(out / "last.pt").algo == "il"
    assert main(["train", "--config", str(config), "--out", str(out), "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--algo", "ppo", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert main(["train", "--k-max", "0", "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "k_max" in capsys.readouterr().err


def test_cli_help_documents_every_field(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--temperature-decay-rounds" in text and "80%" in text


def test_unknown_config_key_is_an_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('algo = "mfq"\nlearning_rate = 0.1\n')
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_toml(path)


@pytest.mark.slow
def test_learning_beats_a_random_team(tmp_path):
    """After a short training against a random team, IL earns more reward than that team and
    than the same network untrained, on evaluation rounds neither has seen."""
    env_kw = dict(map_size=12, max_steps=60)
    run = train(
        TrainConfig(algo="il", rounds=10, opponent="random", lr=1e-3, replay_ratio=4.0,
                    temperature_start=0.5, temperature_end=0.05, out=str(tmp_path / "run"),
                    save_every=100, **env_kw),
        progress=False,
    )
    env = make_env("battle", 12, seed=123, max_steps=60)

    def margin(policy):
        results = [play_round(env, {"red": policy}, seed=1000 + s) for s in range(3)]
        return np.mean([r.groups["red"].reward - r.groups["blue"].reward for r in results])

    torch.manual_seed(7)
    untrained = Policy(make_algorithm("il", env.specs["red"]), temperature=0.1, radius=6,
                       k_max=32, seed=0)
    trained = load_checkpoint(run / "last.pt").policy(seed=0)
    assert margin(trained) > 0
    assert margin(trained) > margin(untrained)
