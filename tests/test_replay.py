import numpy as np
import pytest
import torch

from cmfq.algos import Decision
from cmfq.envs import Observation
from cmfq.training.replay import ReplayBuffer

A = 4


def team(step, n, k=2):
    """A fake team whose every value encodes (step, agent row), so a sample can be checked."""
    code = step * 100 + np.arange(n, dtype=np.float32)
    view = np.broadcast_to(code[:, None, None, None], (n, 5, 5, 1)).astype(np.float32)
    obs = Observation(view, code[:, None].copy(), np.arange(n), np.zeros((n, 2), np.int32))
    neighbors = np.stack([(np.arange(n) + j + 1) % n for j in range(k)], 1) if n > 1 else (
        np.full((n, k), -1)
    )
    decision = Decision(
        actions=(np.arange(n) + step) % A,
        neighbor_input=np.tile(code[:, None], (1, A)),
        neighbors=neighbors,
        neighbor_actions=np.where(neighbors >= 0, step % A, -1),
    )
    return obs, decision


def fill(buffer, alive_per_step, n0):
    n = n0
    for step, alive_rows in enumerate(alive_per_step):
        obs, dec = team(step, n)
        alive = np.zeros(n, bool)
        alive[alive_rows] = True
        buffer.add_step(obs, dec, reward=obs.features[:, 0] + 0.5, alive=alive)
        n = int(alive.sum())
    obs, dec = team(len(alive_per_step), n)
    buffer.end_round(obs, dec)


def test_sampled_transitions_link_s_and_next_s():
    buffer = ReplayBuffer(1000, A)
    # Step 0: 4 agents, rows 1 and 3 survive; step 1: of those 2, row 0 survives.
    fill(buffer, [[1, 3], [0]], n0=4)
    assert len(buffer) == 6
    batch = buffer.sample(200, np.random.default_rng(0), with_neighbors=True)
    code = batch.features[:, 0]
    s, s_next = code[batch.obs], code[batch.next_obs]
    step, row = s // 100, s % 100
    assert torch.equal(batch.reward, s + 0.5)
    assert torch.equal(batch.action, ((row + step) % A).long())
    assert torch.equal(batch.neighbor_input[:, 0], s)
    survived = batch.done == 0
    # Survivors keep their order: step-0 rows 1, 3 become step-1 rows 0, 1; step-1 row 0 stays 0.
    expected_next_row = {(0, 1): 0, (0, 3): 1, (1, 0): 0}
    for st, r, nxt, ok in zip(step.tolist(), row.tolist(), s_next.tolist(), survived.tolist(),
                              strict=True):
        assert ok == ((st, r) in expected_next_row)
        if ok:
            assert nxt == (st + 1) * 100 + expected_next_row[(st, r)]
    assert torch.equal(batch.next_neighbor_input[survived, 0], s_next[survived])
    # Neighbour rows point at the teammates' observations of the same step.
    valid = batch.neighbors >= 0
    nbr_code = code[batch.neighbors.clamp(min=0)]
    assert torch.equal((nbr_code // 100)[valid], step[:, None].expand_as(valid)[valid])
    assert set(batch.done.tolist()) == {0.0, 1.0}


def test_capacity_drops_oldest_steps():
    buffer = ReplayBuffer(5, A)
    fill(buffer, [[0, 1, 2], [0, 1, 2], [0, 1, 2]], n0=3)
    assert len(buffer) <= 5 and buffer.added == 9
    batch = buffer.sample(100, np.random.default_rng(1))
    assert (batch.features[batch.obs, 0] // 100 >= 1).all()


def test_state_dict_round_trip_gives_the_same_samples():
    buffer = ReplayBuffer(100, A)
    fill(buffer, [[0, 2], [1]], n0=3)
    copy = ReplayBuffer(1, 1)
    copy.load_state_dict(buffer.state_dict())
    a = buffer.sample(32, np.random.default_rng(7), with_neighbors=True)
    b = copy.sample(32, np.random.default_rng(7), with_neighbors=True)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_a_buffer_saved_under_the_former_name_of_the_neighbour_input_loads():
    buffer = ReplayBuffer(100, A)
    fill(buffer, [[0, 2], [1]], n0=3)
    state = buffer.state_dict()
    state["mean_action"] = state.pop("neighbor_input")  # how resume.pt files before it hold it
    copy = ReplayBuffer(1, 1)
    copy.load_state_dict(state)
    a = buffer.sample(32, np.random.default_rng(7), with_neighbors=True)
    b = copy.sample(32, np.random.default_rng(7), with_neighbors=True)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_empty_buffer_cannot_be_sampled():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(10, A).sample(4, np.random.default_rng(0))


def test_two_teams_share_a_buffer_as_streams():
    """Steps of two teams interleave; each team's s' still comes from its own next step."""
    buffer = ReplayBuffer(1000, A)
    for step in range(3):
        for stream, n in (("red", 3), ("blue", 2)):
            obs, dec = team(step + (10 if stream == "blue" else 0), n)
            buffer.add_step(obs, dec, reward=np.zeros(n), alive=np.ones(n, bool), stream=stream)
    for stream, n, offset in (("red", 3, 0), ("blue", 2, 10)):
        buffer.end_round(*team(3 + offset, n), stream=stream)
    batch = buffer.sample(300, np.random.default_rng(0))
    code = batch.features[:, 0]
    s, s_next = code[batch.obs], code[batch.next_obs]
    assert (batch.done == 0).all()
    torch.testing.assert_close(s_next, s + 100)  # same team, same row, one step later


def test_a_terminal_step_never_bootstraps():
    buffer = ReplayBuffer(1000, A)
    obs, dec = team(0, 3)
    buffer.add_step(obs, dec, reward=np.ones(3), alive=np.ones(3, bool), terminal=True)
    buffer.end_round(obs, None)
    assert len(buffer) == 3
    assert (buffer.sample(20, np.random.default_rng(0)).done == 1).all()


def test_transitions_wait_for_their_next_observation():
    buffer = ReplayBuffer(1000, A)
    obs, dec = team(0, 2)
    buffer.add_step(obs, dec, reward=np.ones(2), alive=np.array([True, False]))
    assert len(buffer) == 1  # the death; the survivor's s' is not known yet
    buffer.end_round(*team(1, 1))
    assert len(buffer) == 2
    with pytest.raises(ValueError, match="survived"):
        buffer.add_step(*team(2, 2), reward=np.ones(2), alive=np.ones(2, bool))
        buffer.add_step(*team(3, 5), reward=np.ones(5), alive=np.ones(5, bool))
