"""The gradient steps (``Learner``) and the replay on the device (``DeviceReplay``)."""

import copy

import numpy as np
import pytest
import torch
from conftest import CUDA_SKIP_REASON

import cmfq
from cmfq.algos import Decision, Policy, make_algorithm
from cmfq.envs import Observation, make_env
from cmfq.training.config import TrainConfig
from cmfq.training.device_replay import DRAWS_PER_REFILL, DeviceReplay
from cmfq.training.learner import Learner, flushing_subnormals, subnormals_flushed
from cmfq.training.replay import ReplayBuffer
from cmfq.training.rollout import play_games
from cmfq.training.trainer import resume, train

needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and cmfq.cuda_built()), reason=CUDA_SKIP_REASON
)
CAPACITY = 60  # a round of the small battle writes 126 rows: the ring wraps within a round
OPTIONS = {"lr": 1e-3, "grad_clip": 10.0, "tau_target": 0.05, "batch_size": 16}


def small_battle():
    env = make_env("battle", 15, seed=0, max_steps=6)
    return env, env.specs[env.groups[0]]


def play(env, algo, replay, round_index):
    """One self-play game of ``algo``, both sides recorded into ``replay``."""
    policy = Policy(algo, temperature=1.0, radius=None, k_max=4, seed=round_index)
    play_games([env], [dict.fromkeys(env.groups, policy)], seeds=[round_index],
               record=[dict.fromkeys(env.groups, replay)])


@pytest.fixture(scope="module")
def rounds():
    """A replay after one and after two rounds of the small battle (AMFQ: with neighbours)."""
    env, spec = small_battle()
    algo = make_algorithm("amfq", spec)
    replay = ReplayBuffer(CAPACITY, spec.n_actions)
    play(env, algo, replay, 0)
    first = copy.deepcopy(replay)
    play(env, algo, replay, 1)
    return first, replay


def resolved(batch, with_neighbors):
    """What a batch says about each transition, whatever the layout of its observation rows."""
    def rows(index):
        valid = index >= 0
        return valid, batch.view[index.clamp(min=0)] * valid[..., None, None, None]

    fields = {
        name: getattr(batch, name) for name in (
            "action", "reward", "done", "neighbor_input", "next_neighbor_input", "neighbor_actions",
            "next_neighbor_actions",
        )
    }
    fields |= {"view": batch.view[batch.obs], "features": batch.features[batch.obs],
               "next_view": batch.view[batch.next_obs],
               "next_features": batch.features[batch.next_obs]}
    if with_neighbors:
        for name in ("neighbors", "next_neighbors"):
            fields[name + "_valid"], fields[name + "_view"] = rows(getattr(batch, name))
    else:
        fields["neighbors"], fields["next_neighbors"] = batch.neighbors, batch.next_neighbors
    return fields


@pytest.mark.parametrize("distinct", [False, True])
@pytest.mark.parametrize("with_neighbors", [False, True])
def test_device_batch_is_the_host_batch(rounds, with_neighbors, distinct):
    _, replay = rounds
    ids = np.random.default_rng(0).choice(replay.eligible_ids(), 40)
    on_device = DeviceReplay(CAPACITY, 40, torch.device("cpu"), with_neighbors=with_neighbors,
                             distinct=distinct)
    on_device.refresh(replay)
    host_batch = replay.batch(ids, with_neighbors=with_neighbors)
    device_batch = on_device.batch(torch.from_numpy(ids))
    host, device = resolved(host_batch, with_neighbors), resolved(device_batch, with_neighbors)
    assert host.keys() == device.keys()
    for name in host:
        assert torch.equal(host[name], device[name].to(host[name].dtype)), name
    if distinct:  # the host's very layout: its distinct observations, in the order of their ids
        for name, value in host_batch._asdict().items():
            assert torch.equal(value, getattr(device_batch, name).to(value.dtype)), name
    if with_neighbors:  # the ring wrapped: some neighbours were overwritten and are masked
        assert not device["neighbors_valid"][device["neighbor_actions"] >= 0].all()


def test_refresh_copies_only_what_changed(rounds):
    first, replay = rounds
    step_by_step = DeviceReplay(CAPACITY, 8, torch.device("cpu"), with_neighbors=True)
    assert step_by_step.refresh(first)
    assert not step_by_step.refresh(replay)  # the same shapes: the buffers are kept
    at_once = DeviceReplay(CAPACITY, 8, torch.device("cpu"), with_neighbors=True)
    at_once.refresh(replay)
    ids = torch.from_numpy(replay.eligible_ids())
    a, b = resolved(step_by_step.batch(ids), True), resolved(at_once.batch(ids), True)
    assert all(torch.equal(a[name], b[name]) for name in a)


def coded_replay(steps=3, n=10):
    """A replay of one team whose every observation's feature is its own code (step, agent)."""
    replay = ReplayBuffer(100, 3)
    for step in range(steps + 1):
        code = step * 100 + np.arange(n, dtype=np.float32)
        obs = Observation(np.zeros((n, 5, 5, 1), np.float32), code[:, None], np.arange(n),
                          np.zeros((n, 2), np.int32))
        none = np.full((n, 1), -1)
        decision = Decision(np.zeros(n, np.int64), np.zeros((n, 3), np.float32), none, none)
        if step < steps:
            replay.add_step(obs, decision, np.zeros(n, np.float32), np.ones(n, bool))
        else:
            replay.end_round(obs, decision)
    return replay


def test_device_draws_are_seeded_and_uniform():
    replay = coded_replay()
    samplers = [DeviceReplay(100, 32, torch.device("cpu"), with_neighbors=False)
                for _ in range(2)]
    draws = []
    for sampler in samplers:
        sampler.refresh(replay)
        sampler.seed(7)
        batches = []
        for _ in range(DRAWS_PER_REFILL + 10):  # past a refill of the draws
            sampler.next_draw()
            batch = sampler.sample()
            batches.append(batch.features[batch.obs, 0])
        draws.append(torch.cat(batches))
    assert torch.equal(draws[0], draws[1])
    codes, counts = torch.unique(draws[0], return_counts=True)
    assert codes.tolist() == [step * 100 + i for step in range(3) for i in range(10)]
    expected = len(draws[0]) / 30
    assert counts.min() > 0.8 * expected and counts.max() < 1.2 * expected


@pytest.fixture
def one_thread():
    """One torch thread (training's default): with more, a CPU backward may sum in any order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_host_sampling_learner_makes_the_plain_updates(rounds, one_thread):
    """The CPU path: today's loop of sample, loss, clip, Adam, soft target update, to the bit."""
    _, replay = rounds
    torch.manual_seed(0)
    algo = make_algorithm("amfq", replay_spec())
    learner = Learner(copy.deepcopy(algo), device_sampling=False, graph_step=False, **OPTIONS)
    loss = learner.learn(replay, 5, np.random.default_rng(3), temperature=0.5)

    online, target = algo, copy.deepcopy(algo).requires_grad_(False)
    optimizer = torch.optim.Adam(online.parameters(), lr=OPTIONS["lr"], fused=True)
    rng, losses = np.random.default_rng(3), []
    with subnormals_flushed():
        for _ in range(5):
            batch = replay.sample(OPTIONS["batch_size"], rng, with_neighbors=True)
            step_loss = online.loss(batch, target, 0.5)
            optimizer.zero_grad()
            step_loss.backward()
            torch.nn.utils.clip_grad_norm_(online.parameters(), OPTIONS["grad_clip"])
            optimizer.step()
            with torch.no_grad():
                for p_target, p in zip(target.parameters(), online.parameters(), strict=True):
                    p_target.lerp_(p, OPTIONS["tau_target"])
            losses.append(step_loss.item())
    assert loss == float(np.mean(losses))
    for mine, theirs in ((learner.online, online), (learner.target, target)):
        assert all(torch.equal(a, b) for a, b in zip(mine.parameters(), theirs.parameters()))


def replay_spec():
    return small_battle()[1]


@pytest.mark.parametrize("temperature", [0.5, 0.0])
def test_device_sampling_learner_is_reproducible(rounds, temperature, one_thread):
    """The GPU's path run eagerly on the CPU: the same seed gives the same updates."""
    _, replay = rounds
    torch.manual_seed(0)
    algo = make_algorithm("mfq", replay_spec())
    learners = [Learner(copy.deepcopy(algo), device_sampling=True, graph_step=False, **OPTIONS)
                for _ in range(2)]
    losses = [learner.learn(replay, 6, np.random.default_rng(1), temperature)
              for learner in learners]
    assert np.isfinite(losses[0]) and losses[0] == losses[1]
    a, b = (list(learner.online.parameters()) for learner in learners)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, algo.parameters()))


def test_state_of_a_graph_run_loads_on_the_cpu(rounds):
    """A run saved with captured (capturable) Adam resumes where no graph runs, and back."""
    _, replay = rounds
    algo = make_algorithm("mfq", replay_spec())
    saved = Learner(copy.deepcopy(algo), device_sampling=False, graph_step=False, **OPTIONS)
    saved.learn(replay, 2, np.random.default_rng(0), 0.5)
    state = saved.state_dict()
    state["optimizer"]["param_groups"][0]["capturable"] = True
    resumed = Learner(copy.deepcopy(algo), device_sampling=False, graph_step=False, **OPTIONS)
    resumed.load_state_dict(state)
    assert not resumed.optimizer.param_groups[0]["capturable"]
    assert np.isfinite(resumed.learn(replay, 2, np.random.default_rng(1), 0.5))


def test_graph_step_needs_cuda():
    with pytest.raises(ValueError, match="graph_step"):
        TrainConfig(device="cpu", graph_step=True)
    with pytest.raises(ValueError, match="graph_step"):
        Learner(make_algorithm("mfq", replay_spec()), device_sampling=True, graph_step=True,
                **OPTIONS)


def test_compile_step_needs_the_cpu_and_the_device_sampler():
    with pytest.raises(ValueError, match="compile_step"):
        TrainConfig(device="cuda", compile_step=True)
    with pytest.raises(ValueError, match="compile_step"):
        Learner(make_algorithm("mfq", replay_spec()), device_sampling=False, graph_step=False,
                compile_step=True, **OPTIONS)


def change(network, start):
    """How far ``network``'s weights moved from ``start``'s, as one vector."""
    return torch.cat([(a - b).flatten() for a, b in
                      zip(network.parameters(), start.parameters(), strict=True)])


def test_subnormals_are_flushed_only_inside():
    """The CPU updates' flush-to-zero mode is on inside ``subnormals_flushed`` and back to what
    it was after, also when the updates raise or the mode was on before."""
    assert not flushing_subnormals()
    with subnormals_flushed():
        assert flushing_subnormals()
        with subnormals_flushed():
            pass
        assert flushing_subnormals()
    assert not flushing_subnormals()
    with pytest.raises(RuntimeError), subnormals_flushed():
        raise RuntimeError
    assert not flushing_subnormals()


@pytest.mark.parametrize("device_sampling", [False, True])
def test_cpu_updates_run_with_subnormals_flushed(rounds, device_sampling):
    """Every CPU update, with either sampler, runs with subnormals flushed (Adam's decaying
    moments would otherwise slow it down tenfold); acting, after ``learn``, does not."""
    _, replay = rounds
    learner = Learner(make_algorithm("mfq", replay_spec()), device_sampling=device_sampling,
                      graph_step=False, **OPTIONS)
    name = "_device_update" if device_sampling else "_update"
    update, seen = getattr(learner, name), []
    setattr(learner, name,
            lambda *args: (seen.append(flushing_subnormals()), update(*args))[1])
    learner.learn(replay, 2, np.random.default_rng(0), 0.5)
    assert seen == [True, True] and not flushing_subnormals()


@pytest.mark.slow
@pytest.mark.parametrize("algo_name", ["mfq", "amfq"])
def test_compiled_step_makes_the_eager_updates(rounds, algo_name, one_thread):
    """float32: the compiled step makes the eager device step's updates on the same batches,
    round after round, to the compiler's rounding (it fuses and reorders the arithmetic): losses
    within 1e-4, the online and target weights' change within 2 %, Adam's state alike."""
    first, replay = rounds
    torch.manual_seed(0)
    algo = make_algorithm(algo_name, replay_spec())
    learners = {compiled: Learner(copy.deepcopy(algo), device_sampling=True, graph_step=False,
                                  compile_step=compiled, **OPTIONS)
                for compiled in (False, True)}
    for data, temperature in ((first, 1.0), (replay, 0.5), (replay, 0.0)):
        losses = {compiled: learner.learn(data, 4, np.random.default_rng(2), temperature)
                  for compiled, learner in learners.items()}
        assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    for network in ("online", "target"):
        eager, compiled = (change(getattr(learners[c], network), algo) for c in (False, True))
        assert (compiled - eager).norm() < 2e-2 * eager.norm()
    states = [learner.optimizer.state_dict()["state"] for learner in learners.values()]
    assert states[0].keys() == states[1].keys()
    for eager, compiled in zip(states[0].values(), states[1].values()):
        assert eager["step"] == compiled["step"] == 12
        assert torch.allclose(eager["exp_avg_sq"], compiled["exp_avg_sq"], rtol=0.05, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("compile_step", [False, True])
def test_bfloat16_step_follows_the_float32_one(rounds, compile_step, one_thread):
    """step_dtype bfloat16 (autocast; compiled: bfloat16 copies of the weights) makes float32's
    updates to bfloat16's rounding: from the same weights and batches the first round's loss is
    within 2 %, and after two rounds (trajectories part a little) the weights have moved the same
    way (cosine of the changes above 0.8); weights and Adam stay float32."""
    first, replay = rounds
    torch.manual_seed(0)
    algo = make_algorithm("mfq", replay_spec())
    learners = {dtype: Learner(copy.deepcopy(algo), device_sampling=True, graph_step=False,
                               step_dtype=dtype, compile_step=compile_step, **OPTIONS)
                for dtype in (torch.float32, torch.bfloat16)}
    losses = {dtype: learner.learn(first, 6, np.random.default_rng(2), 1.0)
              for dtype, learner in learners.items()}
    assert losses[torch.bfloat16] == pytest.approx(losses[torch.float32], rel=0.02)
    for learner in learners.values():
        learner.learn(replay, 6, np.random.default_rng(3), 0.5)
    full, half = (change(learners[dtype].online, algo) for dtype in learners)
    assert torch.nn.functional.cosine_similarity(full, half, dim=0) > 0.8
    low = learners[torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in [*low.online.parameters(),
                                                  *low.target.parameters()])
    assert all(v.dtype == torch.float32 for state in low.optimizer.state.values()
               for v in state.values())


@needs_cuda
@pytest.mark.parametrize("algo_name", ["mfq", "amfq"])
def test_graph_step_makes_the_eager_updates(rounds, algo_name):
    """The captured update replays what the eager device update computes, round after round
    (the GPU's kernels may sum in another order, so: close, not equal)."""
    first, replay = rounds
    torch.manual_seed(0)
    algo = make_algorithm(algo_name, replay_spec()).cuda()
    learners = {graph: Learner(copy.deepcopy(algo), device_sampling=True, graph_step=graph,
                               **OPTIONS) for graph in (False, True)}
    for data, temperature in ((first, 1.0), (replay, 0.5), (replay, 0.0)):
        losses = {graph: learner.learn(data, 12, np.random.default_rng(2), temperature)
                  for graph, learner in learners.items()}
        assert losses[True] == pytest.approx(losses[False], rel=1e-3)
    assert set(learners[True]._graphs) == {True, False}  # both TD temperatures were captured

    def change(learner):
        return torch.cat([(a - b).flatten() for a, b in
                          zip(learner.online.parameters(), algo.parameters(), strict=True)])

    eager, graph = change(learners[False]), change(learners[True])
    assert (graph - eager).norm() < 1e-2 * eager.norm()


@needs_cuda
def test_captured_updates_do_not_wait_for_the_device(rounds):
    _, replay = rounds
    algo = make_algorithm("mfq", replay_spec()).cuda()
    learner = Learner(algo, device_sampling=True, graph_step=True, **OPTIONS)
    learner.learn(replay, 8, np.random.default_rng(0), 0.5)  # warm up and capture
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(DRAWS_PER_REFILL + 4):  # a refill of the draws included
            learner._device_replay.next_draw()
            learner._device_update(True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert np.isfinite(learner._loss_sum.item())


@needs_cuda
@pytest.mark.parametrize("graph_step", [False, True])
def test_cuda_training_runs(tmp_path, graph_step):
    config = TrainConfig(algo="cmfq", map_size=15, rounds=2, max_steps=8, games_per_round=2,
                         device="cuda", graph_step=graph_step, out=str(tmp_path / "run"))
    from cmfq.training.metrics import read_metrics

    run_dir = train(config, progress=False)
    resume(run_dir, rounds=3, progress=False)  # the saved Adam state, captured again
    rows = read_metrics(run_dir / "metrics.csv")
    assert len(rows) == 3 and all(np.isfinite(row["loss"]) for row in rows)
