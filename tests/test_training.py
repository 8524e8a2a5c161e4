import dataclasses
import inspect
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from helpers import assert_same_run

import cmfq
from cmfq.algos import ALGOS, Policy, make_algorithm
from cmfq.cli import main
from cmfq.envs import make_env
from cmfq.evaluation.match import Arena, Game
from cmfq.options import help_text
from cmfq.training.checkpoint import atomic_save, load_checkpoint, store_half_precision
from cmfq.training.config import TrainConfig
from cmfq.training.device import resolve_device
from cmfq.training.metrics import read_metrics
from cmfq.training.replay import ReplayBuffer
from cmfq.training.rollout import play_games
from cmfq.training.run_folder import RunFolder
from cmfq.training.trainer import resume, train

TINY = dict(map_size=12, max_steps=20, rounds=2, replay_rows=2000, save_every=1)


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
    [result] = play_games([big], [{big.groups[0]: ckpt.policy(seed=0)}], seeds=[4])
    assert result.steps == 5 and result.groups[big.groups[0]].initial > ckpt.config.map_size // 3


BFLOAT16 = {"train_dtype": "bfloat16"}


@pytest.mark.parametrize("algo,games,options", [
    ("mfq", 1, {}), ("mfq", 2, {}), ("cmfq", 1, {}), ("amfq", 1, {}), ("mfq", 1, BFLOAT16),
    ("cmfq", 1, BFLOAT16), ("amfq", 1, BFLOAT16),
    pytest.param("mfq", 1, dict(BFLOAT16, compile_step=True), marks=pytest.mark.slow),
])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, algo, games, options):
    cfg = dict(TINY, algo=algo, rounds=3, temperature_decay_rounds=3, games_per_round=games,
               **options)
    straight = train(TrainConfig(out=str(tmp_path / "a"), **cfg), progress=False)
    cut = train(TrainConfig(out=str(tmp_path / "b"), **dict(cfg, rounds=2)), progress=False)
    resume(cut, rounds=3, progress=False)
    assert len(read_metrics(cut / "metrics.csv")) == 3
    assert_same_run(straight, cut)


def test_resume_misuse_is_refused_with_a_clear_error(tmp_path, capsys):
    run = train(TrainConfig(algo="il", out=str(tmp_path / "run"), **TINY), progress=False)
    # A flag other than --rounds, or a config file, would change the run mid-way.
    assert main(["train", "--resume", str(run), "--lr", "0.1", "--quiet"]) == 2
    assert "only --rounds may change" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--config", "x.toml", "--quiet"]) == 2
    assert "--config" in capsys.readouterr().err
    # A folder with no run in it.
    assert main(["train", "--resume", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    # Training afresh into a folder that holds a run.
    assert main(["train", "--algo", "il", "--out", str(run), "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # A finished run: said so, nothing trained.
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert capsys.readouterr().out == (f"{run} is finished: 2 rounds trained, nothing to do "
                                       "(--rounds N with N above 2 trains it further)\n")
    assert len(read_metrics(run / "metrics.csv")) == 2
    # A resume.pt without training state (an evaluation checkpoint put in its place).
    (run / "resume.pt").write_bytes((run / "last.pt").read_bytes())
    assert main(["train", "--resume", str(run), "--rounds", "3", "--quiet"]) == 2
    assert "no training state" in capsys.readouterr().err


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
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    whole = (run / "last.pt").read_bytes()
    middle = len(whole) // 2
    damaged = {
        "the file is empty": b"",
        "the file is truncated": whole[:1000],
        "the file is truncated ": whole[:-100],
        "it is not a file written by torch.save": b"\x80\x04not a checkpoint at all" * 10,
        # torch.load checks no checksum: these bytes would give the network other weights.
        "the file is corrupt": whole[:middle] + bytes(b ^ 0xFF for b in whole[middle:][:64])
        + whole[middle + 64:],
    }
    for what, data in damaged.items():
        path = tmp_path / "damaged.pt"
        path.write_bytes(data)
        with pytest.raises(ValueError) as caught:
            load_checkpoint(path)
        message = str(caught.value)
        assert message.startswith(f"{path} is not a readable cmfq checkpoint: {what.strip()}")
        assert "\n" not in message and "weights_only=False" not in message
        assert not message.endswith(":")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_checkpoint_cannot_run_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "cmfq-checkpoint-1", "payload": _RunsCode()}, path)
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_a_checkpoint_stored_in_half_precision_rebuilds_its_weights_rounded_to_float16(tmp_path):
    run = train(TrainConfig(algo="cmfq", out=str(tmp_path / "run"), **TINY), progress=False)
    folder = RunFolder(run)
    full = load_checkpoint(folder.last_file).build_algorithm()
    size = folder.last_file.stat().st_size
    store_half_precision(folder.last_file)
    half = load_checkpoint(folder.last_file).build_algorithm()
    assert folder.last_file.stat().st_size < 0.6 * size
    for (name, a), (_, b) in zip(full.state_dict().items(), half.state_dict().items()):
        assert b.dtype == a.dtype and torch.equal(b, a.half().to(a.dtype)), name
    with pytest.raises(ValueError, match="resumes training"):
        store_half_precision(folder.resume_file)


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


def test_cli_help_documents_every_field(capsys, monkeypatch):
    # The help comes from the fields' metadata: it needs no source files.
    def no_sources(*args, **kwargs):
        raise OSError("no sources")

    monkeypatch.setattr(inspect, "getsource", no_sources)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--temperature-decay-rounds" in text and "80%" in text
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text and help_text(f) and help_text(f)[:30] in text, f.name


def test_each_env_and_algorithm_brings_its_options():
    config = TrainConfig(algo="cmfq", env="tiger-deer", n_deer=7, weighting="softmax")
    assert config.algo_options() == {"gamma": 0.95, "td_target": "boltzmann",
                                     "neighbor_branch": "published",
                                     "causal_temperature": 0.1, "weighting": "softmax",
                                     "weight_temperature": 1.0, "relative_temperature": 1.0,
                                     "weight_scores": "effects", "fallback_effect": 0.01}
    assert "n_deer" in config.env_options() and "agents_per_side" not in config.env_options()
    assert TrainConfig(algo="mfq").algo_options() == {"gamma": 0.95, "td_target": "boltzmann",
                                                      "neighbor_branch": "published"}
    with pytest.raises(ValueError, match="weighting must be one of"):
        TrainConfig(weighting="max")
    with pytest.raises(ValueError, match="attention_dim must be > 0"):
        TrainConfig(attention_dim=0)


def test_former_field_names_still_work_with_one_deprecation_message(tmp_path, capsys):
    path = tmp_path / "old.toml"
    path.write_text('algo = "il"\nenvs = 2\nbuffer_size = 3000\n')
    with pytest.warns(FutureWarning) as caught:
        config = TrainConfig.from_toml(path)
    assert [str(w.message).split(" (")[0] for w in caught] == [
        "'buffer_size' is now 'replay_rows'", "'envs' is now 'games_per_round'"]
    assert (config.games_per_round, config.replay_rows) == (2, 3000)
    for both in ({"envs": 2, "games_per_round": 2}, {"envs": 2, "games": 2}):
        with pytest.warns(FutureWarning), pytest.raises(ValueError, match="several names"):
            TrainConfig.from_dict(both)
    with pytest.warns(FutureWarning) as caught:
        assert main(["train", "--algo", "il", "--map-size", "12", "--max-steps", "5",
                     "--rounds", "1", "--buffer-size", "500", "--games", "2", "--quiet",
                     "--out", str(tmp_path / "run")]) == 0
    assert [str(w.message).split(" (")[0] for w in caught] == [
        "'buffer_size' is now 'replay_rows'", "'games' is now 'games_per_round'"]
    saved = TrainConfig.from_toml(tmp_path / "run" / "config.toml")
    assert (saved.games_per_round, saved.replay_rows) == (2, 500)
    # A run folder and a checkpoint written under the old names load without a message.
    text = (tmp_path / "run" / "config.toml").read_text()
    (tmp_path / "run" / "config.toml").write_text(
        text.replace("games_per_round =", "envs =").replace("replay_rows =", "buffer_size ="))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert RunFolder(tmp_path / "run").saved_config().games_per_round == 2
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    config = checkpoint["config"]
    config["games"] = config.pop("games_per_round")
    config["buffer_size"] = config.pop("replay_rows")
    atomic_save(checkpoint, tmp_path / "old.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(tmp_path / "old.pt").config.replay_rows == 500


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
        results = [play_games([env], [{"red": policy}], seeds=[1000 + s])[0] for s in range(3)]
        return np.mean([r.groups["red"].reward - r.groups["blue"].reward for r in results])

    torch.manual_seed(7)
    untrained = Policy(make_algorithm("il", env.specs["red"]), temperature=0.1, radius=6,
                       k_max=32, seed=0)
    trained = load_checkpoint(run / "last.pt").policy(seed=0)
    assert margin(trained) > 0
    assert margin(trained) > margin(untrained)


def test_sides_are_drawn_per_round_logged_and_reproducible(tmp_path):
    cfg = dict(TINY, algo="mfq", rounds=6, save_every=6)
    a = read_metrics(train(TrainConfig(out=str(tmp_path / "a"), **cfg), progress=False)
                     / "metrics.csv")
    b = read_metrics(train(TrainConfig(out=str(tmp_path / "b"), **cfg), progress=False)
                     / "metrics.csv")
    sides = [row["side"] for row in a]
    assert set(sides) == {0.0, 1.0}
    assert sides == [row["side"] for row in b]


def test_opponent_transitions_double_the_data_of_a_self_play_round(tmp_path):
    def first_round(feed: bool) -> dict:
        run = train(TrainConfig(algo="mfq", learn_from_opponent=feed,
                                out=str(tmp_path / str(feed)), **dict(TINY, rounds=1)),
                    progress=False)
        return read_metrics(run / "metrics.csv")[0]

    alone, both = first_round(False), first_round(True)
    assert both["steps"] == alone["steps"]
    # Both sides start equal and lose agents alike only by chance: about twice the transitions.
    assert 1.5 * alone["buffer"] < both["buffer"] <= 2 * alone["buffer"] + 1
    assert both["updates"] > alone["updates"]


def test_a_wiped_out_side_ends_the_round_with_terminal_transitions():
    env = make_env("tiger-deer", 12, seed=0, n_tigers=2, n_deer=3, tiger_step_recover=-20.0)
    replay = ReplayBuffer(100, env.specs["tiger"].n_actions)
    [result] = play_games([env], [{}], seeds=[0], record=[{"tiger": replay}])
    assert result.steps == 1 and len(replay) == 2
    assert (replay.sample(16, np.random.default_rng(0)).done == 1).all()


def test_config_rejects_a_bad_weighting():
    with pytest.raises(ValueError, match="weighting must be one of"):
        TrainConfig(weighting="max")
    with pytest.raises(ValueError, match="weight_temperature must be > 0"):
        TrainConfig(weighting="softmax", weight_temperature=0.0)


def test_config_toml_round_trip(tmp_path):
    config = TrainConfig(algo="amfq", radius=2.5, minimap_mode=False, out='runs/"quoted"',
                         td_target="double", dead_penalty=-0.25)
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert TrainConfig.from_toml(path) == config


def test_device_names(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() and cmfq.cuda_built() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device must be"):
        TrainConfig(device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda:0")


def test_training_runs_on_the_device_and_checkpoints_load_anywhere(tmp_path, device):
    run = train(TrainConfig(algo="cmfq", device=device, out=str(tmp_path / "run"),
                            **dict(TINY, rounds=1)), progress=False)
    ckpt = load_checkpoint(run / "last.pt")
    assert all(t.device.type == "cpu" for t in ckpt.model.values())
    for where in ("cpu", device):
        algo = ckpt.build_algorithm(where)
        assert next(algo.parameters()).device.type == torch.device(where).type
    env = make_env("battle", 16, seed=1, max_steps=3)
    [result] = play_games([env], [{"red": ckpt.policy(seed=0, device=device)}], seeds=[2])
    assert result.steps == 3


def rules(games):
    """The env whose rules the games play by: magent2's first env, or the torch games' world."""
    return games.envs[0] if hasattr(games, "envs") else games.world


def test_a_checkpoint_refuses_an_env_of_other_shapes_and_evaluation_takes_its_settings(tmp_path):
    run = train(TrainConfig(algo="mfq", minimap_mode=False, id_embedding=True,
                            out=str(tmp_path / "run"), **dict(TINY, rounds=1)), progress=False)
    ckpt = load_checkpoint(run / "last.pt")
    with pytest.raises(ValueError, match="expects .*minimap_mode"):
        ckpt.check_fits(make_env("battle", 20, seed=0))  # the published default: minimap on, no ids
    ckpt.check_fits(make_env("battle", 20, seed=0, **ckpt.env_settings()))
    with pytest.warns(FutureWarning, match="check_fits"):  # the former name still works
        ckpt.fit(make_env("battle", 20, seed=0, **ckpt.env_settings()))
    arena = Arena([run / "last.pt"], "battle", 20, max_steps=2)
    assert rules(arena.env).minimap_mode is False and rules(arena.env).id_embedding is True
    assert arena.play([Game((0, 0), 0, 0)])[0].steps == 2
    with pytest.raises(ValueError, match="torch backend has no id embedding"):
        Arena([run / "last.pt"], "battle", 20, max_steps=2, env_backend="torch")


@pytest.mark.parametrize("backend", ["magent2", "torch"])
def test_tiger_deer_settings_reach_the_run_folder_and_the_evaluation(tmp_path, backend):
    settings = dict(tiger_density=0.03, deer_density=0.08, tiger_step_recover=0.0,
                    tiger_attack_reward=0.1)
    run = train(TrainConfig(algo="mfq", env="tiger-deer", out=str(tmp_path / "run"),
                            **settings, **TINY), progress=False)
    assert TrainConfig.from_toml(run / "config.toml").env_settings() == {
        "minimap_mode": True, "id_embedding": False, **settings}
    assert load_checkpoint(run / "last.pt").env_settings() == {
        "minimap_mode": True, "id_embedding": False, **settings}
    # The random team shares the arena, so it hunts under the same rules, at any map size.
    arena = Arena([run / "last.pt", "random"], "tiger-deer", 20, max_steps=2,
                  env_backend=backend)
    env = rules(arena.env)
    assert (env.n_tigers, env.n_deer) == (12, 32)
    assert (env.tiger_step_recover, env.tiger_attack_reward) == (0.0, 0.1)


@pytest.mark.parametrize("name", ["battle", "tiger-deer"])
def test_shipped_configs_load(name):
    from pathlib import Path

    config = TrainConfig.from_toml(Path(__file__).parents[1] / "configs" / f"{name}.toml")
    assert config.env == name and config.minimap_mode and not config.id_embedding


def test_a_checkpoint_of_the_first_format_loads_with_the_settings_it_was_trained_with(tmp_path):
    run = train(TrainConfig(algo="il", minimap_mode=False, id_embedding=True,
                            out=str(tmp_path / "run"), **dict(TINY, rounds=1)), progress=False)
    data = torch.load(run / "last.pt", weights_only=True)
    data["format"] = "cmfq-checkpoint-1"
    for key in ("td_target", "minimap_mode", "id_embedding", "learn_from_opponent", "device"):
        data["config"].pop(key)  # fields the first format did not have
    data["config"]["double_q"] = False
    old = tmp_path / "old.pt"
    torch.save(data, old)
    ckpt = load_checkpoint(old)
    assert ckpt.config.td_target == "max"  # IL's target before the shared setting
    assert ckpt.env_settings()["minimap_mode"] is False
    assert Arena([old], "battle", 16, max_steps=2).play([Game((0, 0), 0, 0)])[0].steps == 2


def test_radius_zero_gives_no_neighbours_in_training_and_in_evaluation(tmp_path):
    config = TrainConfig(algo="cmfq", out=str(tmp_path / "run"), radius=0.0,
                         **dict(TINY, rounds=1))
    run = train(config, progress=False)
    # The weight diagnostics average over the agents that have neighbours: none had one.
    [row] = read_metrics(run / "metrics.csv")
    assert math.isnan(row["effect_sum"])
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint.policy().radius == 0
    view = checkpoint.spec.view_radius
    assert dataclasses.replace(config, radius=None).neighborhood_radius(view) == view
    assert dataclasses.replace(config, neighborhood="global").neighborhood_radius(view) is None
    with pytest.raises(ValueError, match="radius must be >= 0"):
        dataclasses.replace(config, radius=-1.0)
