"""The consensus game: its rules as tensors, its known answers, and that it tells a network that
reads its neighbours from one that cannot."""

import math

import numpy as np
import pytest
import torch

from cmfq.envs import ConsensusGames, make_env, neighborhoods
from cmfq.envs.consensus import follow_the_neighbours
from cmfq.evaluation.stats import t_quantile_975
from cmfq.training.checkpoint import load_checkpoint
from cmfq.training.config import TrainConfig
from cmfq.training.metrics import read_metrics
from cmfq.training.rollout import play_games
from cmfq.training.trainer import train


def test_games_follow_the_rules_on_any_device(device):
    games = ConsensusGames(6, games=5, consensus_actions=3, informed_share=0.5,
                           target_switch=1.0, device=device)
    games.reset(seed=7)
    assert (games.informed.sum(1) == 18).all()  # exactly the share, in every game
    view, features = games.observe()
    assert view.shape == (5, 36, 5, 5, 1) and features.shape == (5, 36, 4)
    assert view.device.type == torch.device(device).type
    # The centre of an agent's window is itself; the features show the target to the informed
    # only.
    assert torch.equal(view[:, :, 2, 2, 0], games.informed.float())
    expected = torch.nn.functional.one_hot(games.target, 3)[:, None, :] * games.informed[..., None]
    assert torch.equal(features[..., :3], expected.float())
    assert torch.equal(features[..., 3], games.informed.float())
    # A window reaching past the lattice's edge sees zeros there: agent 0 is a corner.
    assert (view[:, 0, :2] == 0).all() and (view[:, 0, :, :2] == 0).all()
    target = games.target.clone()
    actions = torch.randint(0, 3, (5, 36), device=device)
    rewards = games.step(actions)
    assert torch.equal(rewards, (actions == target[:, None]).float())
    assert (games.target != target).all()  # target_switch = 1: every target moved
    again = ConsensusGames(6, games=5, consensus_actions=3, informed_share=0.5, device=device)
    again.reset(seed=7)
    assert torch.equal(again.informed, games.informed)


def test_the_known_answers():
    """Ignoring the neighbours earns the informed share plus a guess of the rest; following
    the neighbours' last majority earns far more. Tolerances: 4 standard errors of a mean over
    the games (the games' returns are independent)."""
    games = ConsensusGames(8, games=512)
    neighbors = torch.from_numpy(neighborhoods(games.positions.numpy(), radius=2.0, k_max=32))
    rule = follow_the_neighbours(games, neighbors, 25, seed=3).sum(0).mean(1)  # [G]
    games.reset(seed=4)
    fixed = torch.zeros(512, 64, dtype=torch.int64)  # the uninformed guess action 0
    ignoring = torch.stack([
        games.step(torch.where(games.informed, games.target[:, None], fixed)) for _ in range(25)
    ]).sum(0).mean(1)
    best_alone = 25 * games.ignoring_the_neighbours()
    assert best_alone == pytest.approx(25 * (0.25 + 0.75 / 4))
    assert abs(ignoring.mean() - best_alone) < 4 * ignoring.std() / math.sqrt(512)
    assert rule.mean() - 4 * rule.std() / math.sqrt(512) > best_alone + 3


def test_env_plays_through_the_training_interface():
    env = make_env("consensus", 5, seed=0, max_steps=4, consensus_actions=3)
    assert env.specs["agents"].n_actions == 3 and env.specs["agents"].view_shape == (5, 5, 1)
    [result] = play_games([env], [{}], seeds=[1])  # a random team
    agents = result.groups["agents"]
    assert result.steps == 4 and agents.initial == agents.survivors == 25
    assert 0 <= agents.reward <= 100
    with pytest.raises(ValueError, match="consensus_actions"):
        make_env("consensus", 5, seed=0, consensus_actions=1)
    with pytest.raises(ValueError, match="must lie in"):
        env.reset(0)
        env.step({"agents": np.full(25, 3)})


SHORT = dict(env="consensus", map_size=8, rounds=24, temperature_decay_rounds=20, games_per_round=2,
             lr=1e-3, replay_rows=20000, save_every=24)


def evaluation_returns(run, seeds) -> np.ndarray:
    """Each evaluation game's return per agent, the run's last network acting at τ = 0.1."""
    policy = load_checkpoint(run / "last.pt").policy(seed=0)
    envs = [make_env("consensus", 8, seed=0) for _ in seeds]
    results = play_games(envs, [{"agents": policy} for _ in seeds], seeds=list(seeds))
    return np.array([r.groups["agents"].reward / 64 for r in results])


def interval(values) -> tuple[float, float]:
    half = t_quantile_975(len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return values.mean() - half, values.mean() + half


def test_mfq_learns_to_read_its_neighbours_and_il_cannot(tmp_path):
    """One seed, a short run: MFQ's policy moves over 100 times as much with ā as its initial
    network's, and it earns more than IL over the same 96 evaluation games, intervals apart;
    IL does no better than ignoring the neighbours allows."""
    runs = {algo: train(TrainConfig(algo=algo, out=str(tmp_path / algo), **SHORT),
                        progress=False) for algo in ("il", "mfq")}
    last = read_metrics(runs["mfq"] / "metrics.csv")[-4:]
    assert np.mean([r["sensitivity"] for r in last]) >= 100 * np.mean(
        [r["sensitivity_floor"] for r in last])
    returns = {algo: evaluation_returns(run, range(100, 196)) for algo, run in runs.items()}
    assert interval(returns["mfq"])[0] > interval(returns["il"])[1]
    best_alone = 25 * ConsensusGames(8).ignoring_the_neighbours()
    assert interval(returns["il"])[0] < best_alone


@pytest.mark.slow
def test_over_seeds_mfq_beats_il_and_cmfq_effects_are_measurable(tmp_path):
    """Four seeds each: MFQ's returns (48 evaluation games a run) above IL's with the t intervals
    over seeds apart, and CMFQ's summed effect over its last rounds at least 1e-2 nats in the
    median seed (experiments/consensus_study.py has ten seeds and the longer runs).

    32 rounds, not SHORT's 24: when MFQ starts to read ā varies with the seed and with the CPU's
    rounding, and one seed of four that has not yet learned (seed 1 on an AMD EPYC at 24 rounds,
    where it then earns what IL earns) is enough to join the intervals."""
    returns, effects = {"il": [], "mfq": []}, []
    for seed in range(4):
        for algo in ("il", "mfq", "cmfq"):
            run = train(TrainConfig(algo=algo, seed=seed, out=str(tmp_path / f"{algo}{seed}"),
                                    **dict(SHORT, rounds=32, save_every=32)), progress=False)
            if algo == "cmfq":
                last = read_metrics(run / "metrics.csv")[-4:]
                effects.append(np.mean([r["effect_sum"] for r in last]))
            else:
                returns[algo].append(evaluation_returns(run, range(200, 248)).mean())
    assert interval(np.array(returns["mfq"]))[0] > interval(np.array(returns["il"]))[1]
    assert np.median(effects) >= 1e-2
