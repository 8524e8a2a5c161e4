"""Runs trained side by side (``train_together``): their games in one batch, each run exactly as
it trains alone."""

import dataclasses

import pytest
from helpers import assert_same_run

from cmfq.training.config import TrainConfig
from cmfq.training.metrics import read_metrics
from cmfq.training.together import train_together
from cmfq.training.trainer import train

SMALL = dict(map_size=12, max_steps=20, rounds=3, temperature_decay_rounds=3, games_per_round=2,
             replay_rows=2000, save_every=1, device="cpu")
RUNS = [dict(algo="mfq", seed=0), dict(algo="cmfq", seed=1), dict(algo="mfq", seed=2)]


def configs(folder, backend, runs=RUNS, **changes):
    return [TrainConfig(env_backend=backend, out=str(folder / f"{run['algo']}-{run['seed']}"),
                        **(SMALL | run | changes)) for run in runs]


def test_runs_trained_together_are_the_runs_trained_alone(tmp_path):
    alone = [train(config, progress=False) for config in configs(tmp_path / "alone", "torch")]
    together = train_together(configs(tmp_path / "together", "torch"), progress=False)
    assert [path.name for path in together] == [path.name for path in alone]
    for a, b in zip(alone, together, strict=True):
        assert_same_run(a, b)
        assert len(read_metrics(b / "metrics.csv")) == SMALL["rounds"]


def test_runs_trained_together_resume_together_on_magent2(tmp_path):
    runs = RUNS[:2]
    alone = [train(config, progress=False) for config in configs(tmp_path / "a", "magent2", runs)]
    cut = train_together(configs(tmp_path / "b", "magent2", runs, rounds=2), progress=False)
    # Given again with more rounds, each goes on from its folder.
    resumed = train_together(configs(tmp_path / "b", "magent2", runs), progress=False)
    assert resumed == cut
    for a, b in zip(alone, resumed, strict=True):
        assert_same_run(a, b)


def test_train_together_refuses_runs_that_cannot_share_a_batch(tmp_path):
    first, second = configs(tmp_path, "torch", RUNS[:2], rounds=1)
    with pytest.raises(ValueError, match="at least one config"):
        train_together([])
    with pytest.raises(ValueError, match=r"map_size: 12 in .*mfq-0, 14 in .*cmfq-1"):
        train_together([first, dataclasses.replace(second, map_size=14)])
    with pytest.raises(ValueError, match="layout: 'fixed' in .*, 'shifted' in "):
        train_together([first, dataclasses.replace(second, layout="shifted")])
    with pytest.raises(ValueError, match="env_backend: 'torch' in .*, 'magent2' in "):
        train_together([first, dataclasses.replace(second, env_backend="magent2")])
    with pytest.raises(ValueError, match="folders of their own"):
        train_together([first, dataclasses.replace(second, out=first.out)])
    assert not any(tmp_path.iterdir())  # nothing written before the checks

    train(first, progress=False)  # one round done
    longer = [dataclasses.replace(config, rounds=2) for config in (first, second)]
    with pytest.raises(ValueError, match=r"from one round, these from several \(.*mfq-0: round 1, "
                                         r".*cmfq-1: round 0\)"):
        train_together(longer)
    with pytest.raises(ValueError, match="holds a run with other settings"):
        train_together([dataclasses.replace(first, lr=0.5), second])
    # A folder with logged rounds but no config is not trained afresh.
    (tmp_path / "cmfq-1").mkdir()
    (tmp_path / "cmfq-1" / "metrics.csv").write_text("round\n")
    with pytest.raises(FileExistsError, match="already holds a run"):
        train_together([first, second])
