"""Several games in lockstep: batched decisions, separate replay streams, ``--games-per-round``."""

import numpy as np
import pytest
import torch

from cmfq.algos import Policy, RandomPolicy, make_algorithm
from cmfq.algos.policy import decide_together
from cmfq.cli import main
from cmfq.envs import GroupState, Observation, make_env, make_games
from cmfq.training.metrics import read_metrics
from cmfq.training.replay import ReplayBuffer
from cmfq.training.rollout import play_games
from cmfq.training.trainer import round_seeds


def transitions(buffer: ReplayBuffer) -> list[tuple]:
    """Every stored transition as (s, a, r, done, s'), observations as bytes: what a TD target
    is built from, independent of where the rows sit in the ring."""
    state = buffer.state_dict()
    first = state["written"] - state["view"].shape[0]
    view, features = state["view"].numpy(), state["features"].numpy()

    def obs(row_id: int) -> bytes:
        return view[row_id - first].tobytes() + features[row_id - first].tobytes()

    out = []
    for k in np.flatnonzero(state["transition"].numpy()):
        done, following = bool(state["done"][k]), int(state["next"][k])
        assert done or following >= first, "a transition lost its s'"
        out.append((obs(first + k), int(state["action"][k]), float(state["reward"][k]), done,
                    None if done else obs(following)))
    return sorted(out)


def test_games_in_lockstep_never_share_a_td_target():
    # Two battles of different lengths (the shorter one waits), both sides recorded into one
    # buffer: every transition must be the one its game makes when played alone.
    lengths, seeds = (6, 11), (3, 4)

    def game(j):
        env = make_env("battle", 12, seed=0, max_steps=lengths[j])
        policies = {g: RandomPolicy(env.specs[g].n_actions, seed=10 * seeds[j] + i)
                    for i, g in enumerate(env.groups)}
        return env, policies

    alone = []
    for j in range(2):
        env, policies = game(j)
        buffer = ReplayBuffer(10_000, env.specs["red"].n_actions)
        [result] = play_games([env], [policies], seeds=[seeds[j]],
                              record=[dict.fromkeys(env.groups, buffer)])
        assert result.steps == lengths[j]
        alone.append(buffer)
    together = ReplayBuffer(10_000, alone[0].n_actions)
    envs, policies = zip(*(game(j) for j in range(2)))
    results = play_games(list(envs), list(policies), seeds=list(seeds),
                          record=[dict.fromkeys(env.groups, together) for env in envs])
    assert [r.steps for r in results] == list(lengths)
    assert together.added == alone[0].added + alone[1].added > 0
    assert transitions(together) == sorted(transitions(alone[0]) + transitions(alone[1]))


@pytest.mark.parametrize(("algo", "radius"), [("amfq", None), ("amfq", 6.0), ("cmfq", 6.0),
                                              ("mfq", None)])
def test_one_batched_decision_for_several_teams_equals_deciding_each_alone(algo, radius):
    teams, prev = [], []
    for seed, size in ((0, None), (1, 3)):  # a smaller team: global neighbourhoods get padded
        env = make_env("battle", 12, seed=seed)
        env.reset(seed)
        actions = {g: np.random.default_rng(seed).integers(0, env.specs[g].n_actions,
                                                           env.num_alive(g))
                   for g in env.groups}
        result = env.step(actions)
        alive = result.alive["red"]
        teams.append(Observation(*(a[alive][:size] for a in result.next_obs["red"])))
        prev.append(actions["red"][alive][:size])
    net = make_algorithm(algo, env.specs["red"])
    policy = Policy(net, temperature=0, radius=radius, k_max=4, seed=0)
    batched = policy.decide_teams(teams, prev)
    for decision, obs, before in zip(batched, teams, prev, strict=True):
        single = policy.decide(obs, before)
        np.testing.assert_array_equal(decision.actions, single.actions)
        np.testing.assert_allclose(decision.neighbor_input, single.neighbor_input, atol=1e-6)
        np.testing.assert_array_equal(decision.neighbors, single.neighbors)
        np.testing.assert_array_equal(decision.neighbor_actions, single.neighbor_actions)


@pytest.mark.parametrize(("algo", "radius"), [("il", 6.0), ("mfq", None), ("amfq", None),
                                              ("amfq", 6.0), ("cmfq", 6.0)])
def test_forks_decide_together_exactly_as_each_alone(algo, radius):
    # Teams of 5, 2 and 5 agents (one forward alone has fewer than MIN_ROWS rows, and a global
    # neighbourhood as wide as the team), sampled at temperature 1 by three forks.
    teams, prev = [], []
    for seed, size in ((0, None), (1, 2), (2, None)):
        env = make_env("battle", 12, seed=seed)
        obs = env.reset(seed)["red"]
        teams.append(Observation(*(a[:size] for a in obs)))
        prev.append(np.random.default_rng(seed).integers(0, env.specs["red"].n_actions,
                                                         teams[-1].view.shape[0]))
    policy = Policy(make_algorithm(algo, env.specs["red"]), temperature=1.0, radius=radius,
                    k_max=4, seed=0)

    def forks():
        return [policy.fork(seed, team_size=5) for seed in (5, 6, 7)]

    together = decide_together(forks(), teams, prev)
    alone = [fork.decide(obs, before) for fork, obs, before in zip(forks(), teams, prev,
                                                                   strict=True)]
    for a, b in zip(together, alone, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)  # actions and neighbour inputs, to the bit
    # The forks draw differently: a shared generator would not pass unnoticed above.
    first, second, _ = forks()
    assert not np.array_equal(first.decide(teams[0], prev[0]).actions,
                              second.decide(teams[0], prev[0]).actions)


def test_play_games_needs_one_entry_per_game():
    env = make_env("battle", 12, seed=0)
    with pytest.raises(ValueError, match="one entry per game"):
        play_games([env, env], [{}], seeds=[0, 1])


def test_games_per_round_trains_games_on_sides_drawn_per_game(tmp_path):
    run = tmp_path / "run"
    flags = ["--algo", "cmfq", "--games-per-round", "2", "--map-size", "12", "--max-steps", "20",
             "--rounds", "3", "--save-every", "3", "--replay-rows", "4000"]
    assert main(["train", *flags, "--out", str(run), "--quiet"]) == 0
    rows = read_metrics(run / "metrics.csv")
    assert [r["round"] for r in rows] == [0, 1, 2] and all(r["updates"] > 0 for r in rows)
    # Two games of at most 20 steps each (5 a side rarely wipe out in 20 steps).
    assert all(20 < r["steps"] <= 40 for r in rows)
    expected = [np.mean([s.side % 2 for s in round_seeds(0, r, 2)]) for r in range(3)]
    assert [r["side"] for r in rows] == expected


def some_dead(state: GroupState, seed: int) -> tuple[GroupState, torch.Tensor]:
    """``state`` on the CPU with about a third of the agents dead, game 0 excepted (a full team
    keeps global neighbourhoods as wide as the batched decision's), and random previous actions
    (-1 in game 1: its first step)."""
    state = GroupState(*(t.cpu() for t in state))
    rng = torch.Generator().manual_seed(seed)
    alive = state.alive & (torch.rand(state.alive.shape, generator=rng) < 0.67)
    alive[0] = state.alive[0]
    dead = ~alive
    view, features = state.view.clone(), state.features.clone()
    view[dead], features[dead] = 0.0, 0.0
    prev = torch.randint(0, 21, alive.shape, generator=rng)
    prev[1] = -1
    return GroupState(view, features, state.positions, alive), prev


def teams_of(state: GroupState, prev: torch.Tensor) -> tuple[list[Observation], list]:
    """Each game's live agents as the numpy path sees them, with their previous actions."""
    teams, before = [], []
    for j in range(state.alive.shape[0]):
        live = state.alive[j]
        teams.append(Observation(state.view[j][live].numpy(), state.features[j][live].numpy(),
                                 live.nonzero().flatten().numpy().astype(np.int32),
                                 state.positions[j][live].numpy().astype(np.int32)))
        before.append(None if (prev[j] < 0).all() else prev[j][live].numpy())
    return teams, before


@pytest.mark.parametrize("backend", ["magent2", "torch"])
@pytest.mark.parametrize(("algo", "radius"), [("il", 6.0), ("mfq", None), ("amfq", None),
                                              ("amfq", 6.0), ("cmfq", 6.0), ("cmfq", 2.0)])
def test_acting_on_tensors_equals_deciding_on_numpy_rows(algo, radius, backend, device):
    # Map 16: 10 agents a side, 25 alive in the 3 games (at least MIN_ROWS); at radius 2 up to
    # four teammates tie for the 3 places.
    games = make_games("battle", 16, 3, backend=backend)
    state, prev = some_dead(games.reset([5, 6, 7])["red"], seed=1)
    teams, before = teams_of(state, prev)
    net = make_algorithm(algo, games.specs["red"]).to(device)
    n = state.alive.shape[1]

    # Greedy: each game alone by the numpy path (a fork, so that its few rows are computed as
    # in the tensor path's larger forward; on the CPU, where that is known to hold), the dead's
    # actions 0.
    greedy = Policy(net, temperature=0, radius=radius, k_max=3, seed=0)
    acted = greedy.act(state, prev)
    assert acted.device.type == device
    acted = acted.cpu()
    assert acted.shape == state.alive.shape and (acted[~state.alive] == 0).all()
    for j, (team, earlier) in enumerate(zip(teams, before, strict=True)):
        if device == "cpu":
            alone = greedy.fork(0, team_size=n).decide(team, earlier)
            np.testing.assert_array_equal(acted[j][state.alive[j]].numpy(), alone.actions)

    # Sampled: the network's input, to the bit, and the draws of one numpy decision for the
    # games' teams, from the same seed. (An untrained network barely reads its neighbours, so
    # the actions alone would not see a wrong neighbour.)
    inputs = []
    q_values = net.q_values
    net.q_values = lambda team: inputs.append(team) or q_values(team)

    def sampling():
        return Policy(net, temperature=1.0, radius=radius, k_max=3, seed=3)

    acted = sampling().act(state, prev).cpu()
    numpy_path = sampling().decide_teams(teams, before)
    for tensor, numpy_input in zip(*inputs, strict=True):
        assert torch.equal(tensor, numpy_input)
    assert (inputs[0].neighbor_actions >= 0).any()  # neighbours with previous actions
    for j, decision in enumerate(numpy_path):
        np.testing.assert_array_equal(acted[j][state.alive[j]].numpy(), decision.actions)
    assert len(set(acted[state.alive].tolist())) > 3  # it did sample


def test_random_acting_on_tensors(device):
    games = make_games("battle", 16, 4, backend="torch", device=device)
    state, prev = some_dead(games.reset([0, 1, 2, 3])["red"], seed=0)
    state = GroupState(*(t.to(device) for t in state))
    first, again = (RandomPolicy(21, seed=9).act(state, prev) for _ in range(2))
    assert first.device.type == device
    first, again, alive = first.cpu(), again.cpu(), state.alive.cpu()
    assert torch.equal(first, again) and (first[~alive] == 0).all()
    live = first[alive]
    assert live.min() >= 0 and live.max() < 21 and len(set(live.tolist())) > 10
