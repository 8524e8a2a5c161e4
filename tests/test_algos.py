import math

import numpy as np
import pytest
import torch

from cmfq.algos import ALGOS, TD_TARGETS, TeamInput, make_algorithm
from cmfq.algos.common import (
    boltzmann_value,
    double_q_value,
    max_value,
    mean_action,
    td_loss,
)
from cmfq.envs import GroupSpec
from cmfq.op.generic import causal_weights_reference

SPEC = GroupSpec("red", (7, 7, 3), 6, 5, 3.0)


def team(n=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    nbrs = torch.randint(-1, n, (n, k), generator=g)
    acts = torch.where(nbrs >= 0, torch.randint(0, SPEC.n_actions, (n, k), generator=g), -1)
    return TeamInput(torch.rand(n, 7, 7, 3, generator=g), torch.rand(n, 6, generator=g), nbrs, acts)


def test_mean_action_averages_valid_one_hots():
    got = mean_action(torch.tensor([[0, 2, -1], [-1, -1, -1]]), 3)
    torch.testing.assert_close(got, torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]))


def test_value_functions():
    q = torch.tensor([[1.0, 3.0, 2.0]])
    assert max_value(q).item() == 3.0
    p = np.exp(q.numpy()[0] / 0.5)
    p /= p.sum()
    assert boltzmann_value(q, 0.5).item() == pytest.approx(float((p * q.numpy()[0]).sum()), 1e-6)
    assert boltzmann_value(q, 1e4).item() == pytest.approx(2.0, abs=1e-3)  # uniform policy
    assert boltzmann_value(q, 0.0).item() == 3.0
    online = torch.tensor([[5.0, 0.0, 9.0]])
    assert double_q_value(q, online).item() == 2.0  # target's value at the online argmax


def test_td_loss_is_zero_at_the_target_and_ignores_next_value_when_done():
    reward, done = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])
    next_value = torch.tensor([4.0, 100.0], requires_grad=True)
    loss = td_loss(torch.tensor([1.0 + 0.5 * 4.0, 2.0]), reward, done, next_value, 0.5)
    assert loss.item() == 0.0
    assert not loss.requires_grad


@pytest.mark.parametrize(("weighting", "weight_temperature"),
                         [("proportional", 1.0), ("softmax", 1e-3)])
def test_cmfq_acts_on_the_causal_mean_action(weighting, weight_temperature):
    torch.manual_seed(0)
    algo = make_algorithm("cmfq", SPEC, causal_temperature=0.2, weighting=weighting,
                          weight_temperature=weight_temperature)
    inp = team()
    q, mean, weights, effects = algo.q_values(inp)
    emb = algo.net.embed(inp.view, inp.features)
    ref = causal_weights_reference(
        algo.net.head, emb, inp.neighbor_actions, inp.neighbor_actions >= 0, SPEC.n_actions,
        0.2, weighting, weight_temperature,
    )
    torch.testing.assert_close(weights, ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(effects, ref[1], atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(mean, ref[3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q, algo.net.head(emb, mean), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("algo_name", sorted(ALGOS))
def test_a_bfloat16_embedding_leaves_the_head_and_the_weights_float32(algo_name):
    """``embed_dtype`` bfloat16 (``train_dtype``, when acting): the embedding computes in
    bfloat16 and comes back float32, so the action values and CMFQ's causal weights are the
    float32 head's on the rounded embedding; inside the gradient step's autocast the default
    embedding follows that autocast."""
    torch.manual_seed(0)
    algo = make_algorithm(algo_name, SPEC)
    inp = team()
    full = algo.net.embed(inp.view, inp.features)
    algo.net.embed_dtype = torch.bfloat16
    values = algo.q_values(inp)
    emb = algo.net.embed(inp.view, inp.features)
    assert emb.dtype == values.q.dtype == torch.float32
    torch.testing.assert_close(emb, full, rtol=0.05, atol=0.02)
    torch.testing.assert_close(values.q, algo.net.head(emb, values.neighbor_input))
    algo.net.embed_dtype = torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert algo.net.embed(inp.view, inp.features).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fixed_weights_embed_as_the_network_does(dtype):
    """Inside ``fixed_weights`` (a round's acting), the embedding from the encoders' copies is
    the network's own, bit for bit; the copies go on leaving it."""
    torch.manual_seed(0)
    net = make_algorithm("mfq", SPEC).net
    net.embed_dtype = dtype
    inp = team()
    want = net.embed(inp.view, inp.features)
    with net.fixed_weights():
        assert torch.equal(net.embed(inp.view, inp.features), want)
    assert net._fixed_encoders is None


def test_cmfq_with_uniform_weights_acts_as_mfq():
    torch.manual_seed(0)
    control = make_algorithm("cmfq", SPEC, weighting="uniform")
    mfq = make_algorithm("mfq", SPEC)
    mfq.load_state_dict(control.state_dict())
    inp = team()
    got, want = control.q_values(inp), mfq.q_values(inp)
    assert torch.equal(got.q, want.q) and torch.equal(got.neighbor_input, want.neighbor_input)
    valid = inp.neighbor_actions >= 0
    has = valid.any(1)
    torch.testing.assert_close(got.weights[has].sum(1), torch.ones(int(has.sum())))
    assert (got.weights[~valid] == 0).all() and (got.effects >= 0).all()
    with pytest.raises(ValueError, match="weighting must be one of"):
        make_algorithm("cmfq", SPEC, weighting="max")


def relative_softmax(scores, valid, temperature):
    """softmax over the valid slots of (s_ik / mean_k s_ik) / temperature, row by row."""
    out = torch.zeros_like(scores)
    for i in range(scores.shape[0]):
        s = scores[i, valid[i]]
        if len(s):
            out[i, valid[i]] = torch.softmax(s / s.mean() / temperature, 0)
    return out


@pytest.mark.parametrize("scores", ["effects", "distance"])
def test_relative_weights_are_the_scores_own_and_the_agent_acts_on_them(scores):
    """The relative weighting: softmax of s_ik / mean_k s_ik, so the same for s and 10·s; the
    distance control scores ‖e(a_k) − ā‖² with no Q; the agent acts on Q(s, ., ǎ) of its
    weights; agents with a summed effect under ``fallback_effect`` weight uniformly."""
    torch.manual_seed(0)
    algo = make_algorithm("cmfq", SPEC, weighting="relative", relative_temperature=0.5,
                          weight_scores=scores, fallback_effect=0.0)
    inp = team(n=12, k=5)
    q, mean, weights, effects = algo.q_values(inp)
    valid = inp.neighbor_actions >= 0
    one_hot = torch.nn.functional.one_hot(inp.neighbor_actions.clamp(min=0), SPEC.n_actions)
    plain = mean_action(inp.neighbor_actions, SPEC.n_actions)
    distance = ((one_hot - plain[:, None, :]) ** 2).sum(-1) * valid
    base = effects if scores == "effects" else distance
    spread = (base.sum(1) > 0) & (valid.sum(1) > 0)
    want = relative_softmax(base, valid, 0.5)
    torch.testing.assert_close(weights[spread], want[spread], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(algo.weights(10 * effects, inp.neighbor_actions)[spread],
                               want[spread] if scores == "effects" else weights[spread],
                               atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(mean, (weights[..., None] * one_hot).sum(1))
    emb = algo.net.embed(inp.view, inp.features)
    torch.testing.assert_close(q, algo.net.head(emb, mean))
    algo.fallback_effect = float(effects.sum(1).max()) * 2  # no agent's effects count
    _, mean, weights, _ = algo.q_values(inp)
    torch.testing.assert_close(mean, plain)
    assert (weights[~valid] == 0).all()


def test_the_distance_control_weights_in_proportion_to_the_distance():
    torch.manual_seed(0)
    algo = make_algorithm("cmfq", SPEC, weight_scores="distance", fallback_effect=0.0)
    actions = torch.tensor([[0, 0, 0, 1], [2, 2, -1, -1]])
    effects = torch.ones(2, 4)
    # ā = (3/4, 1/4): distances 1/8 for each 0 and 9/8 for the 1; all agree: uniform.
    torch.testing.assert_close(algo.weights(effects, actions),
                               torch.tensor([[1 / 12, 1 / 12, 1 / 12, 3 / 4], [0.5, 0.5, 0, 0]]))
    assert not make_algorithm("cmfq", SPEC, weighting="uniform",
                              weight_scores="distance").weights_here  # uniform stays MFQ's
    with pytest.raises(ValueError, match="softmax"):
        make_algorithm("cmfq", SPEC, weighting="softmax", weight_scores="distance")
    with pytest.raises(ValueError, match="weight_scores must be one of"):
        make_algorithm("cmfq", SPEC, weight_scores="q")


def test_amfq_attention_weights_only_valid_neighbours():
    torch.manual_seed(0)
    algo = make_algorithm("amfq", SPEC)
    inp = team()
    _, mean, _, _ = algo.q_values(inp)
    has = (inp.neighbor_actions >= 0).any(1)
    torch.testing.assert_close(mean.sum(1)[has], torch.ones(int(has.sum())))
    assert (mean[~has] == 0).all()
    support = torch.zeros_like(mean, dtype=torch.bool)
    for i, row in enumerate(inp.neighbor_actions):
        support[i, row[row >= 0]] = True
    assert (mean[~support] == 0).all()


@pytest.mark.parametrize("name", sorted(ALGOS))
@pytest.mark.parametrize("td_target", TD_TARGETS)
def test_each_algorithm_fits_a_fixed_batch(name, td_target):
    """The TD loss falls when one batch is fitted (the target net fixed): gradients flow."""
    from cmfq.algos.common import Batch

    torch.manual_seed(1)
    algo = make_algorithm(name, SPEC, td_target=td_target)
    target = make_algorithm(name, SPEC, td_target=td_target)
    g = torch.Generator().manual_seed(2)
    u, b, k, a = 24, 16, 3, SPEC.n_actions
    nbrs = torch.randint(-1, u, (b, k), generator=g)
    acts = torch.where(nbrs >= 0, torch.randint(0, a, (b, k), generator=g), -1)
    batch = Batch(
        view=torch.rand(u, 7, 7, 3, generator=g), features=torch.rand(u, 6, generator=g),
        obs=torch.arange(b), next_obs=torch.arange(b, 2 * b) % u,
        action=torch.randint(0, a, (b,), generator=g), reward=torch.randn(b, generator=g),
        done=(torch.rand(b, generator=g) < 0.3).float(),
        neighbor_input=torch.softmax(torch.randn(b, a, generator=g), -1),
        next_neighbor_input=torch.softmax(torch.randn(b, a, generator=g), -1),
        neighbors=nbrs, neighbor_actions=acts, next_neighbors=nbrs, next_neighbor_actions=acts,
    )
    opt = torch.optim.Adam(algo.parameters(), lr=1e-3)
    first = None
    for _ in range(60):
        loss = algo.loss(batch, target, 0.5)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(first) and loss.item() < 0.5 * first


def test_unknown_algorithm():
    with pytest.raises(ValueError, match="unknown algorithm"):
        make_algorithm("ppo", SPEC)
    with pytest.raises(ValueError, match="td_target"):
        make_algorithm("mfq", SPEC, td_target="sarsa")


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_every_algorithm_bootstraps_from_the_same_target(name):
    """With the neighbour input fixed to zeros, the four algorithms give one TD loss for each
    td_target: the setting means the same for all (IL is not left on the max target)."""
    torch.manual_seed(3)
    u, b, a = 12, 8, SPEC.n_actions
    g = torch.Generator().manual_seed(4)
    from cmfq.algos.common import Batch

    none = torch.full((b, 2), -1)
    batch = Batch(
        view=torch.rand(u, 7, 7, 3, generator=g), features=torch.rand(u, 6, generator=g),
        obs=torch.arange(b), next_obs=torch.arange(b, 2 * b) % u,
        action=torch.randint(0, a, (b,), generator=g), reward=torch.randn(b, generator=g),
        done=torch.zeros(b), neighbor_input=torch.zeros(b, a),
        next_neighbor_input=torch.zeros(b, a),
        neighbors=none, neighbor_actions=none, next_neighbors=none, next_neighbor_actions=none,
    )
    for td_target in TD_TARGETS:
        reference = make_algorithm("il", SPEC, td_target=td_target)
        algo = make_algorithm(name, SPEC, td_target=td_target)
        algo.load_state_dict(reference.state_dict(), strict=False)
        losses = [m.loss(batch, m, 0.5).item() for m in (reference, algo)]
        assert losses[0] == pytest.approx(losses[1], rel=1e-5), td_target
