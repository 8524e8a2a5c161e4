"""The replay on tensors (``SlotReplay``) and training's play on tensors (``play_on_tensors``):
the same transitions as the numpy ``ReplayBuffer``, sampled uniformly over the eligible ones."""

import math

import numpy as np
import pytest
import torch
from helpers import assert_same_run

from cmfq.algos import Decision, RandomPolicy
from cmfq.algos.policy import act_at_random
from cmfq.envs import GroupState, Observation, make_games
from cmfq.training.checkpoint import load_checkpoint
from cmfq.training.config import TrainConfig
from cmfq.training.device_replay import DeviceReplay
from cmfq.training.metrics import read_metrics
from cmfq.training.replay import ReplayBuffer
from cmfq.training.slot_replay import SlotReplay
from cmfq.training.tensor_rollout import play_on_tensors
from cmfq.training.trainer import resume, train

N_ACTIONS = 21


class BothReplays(SlotReplay):
    """A slot replay that also records every step it is given into a numpy ``ReplayBuffer``, as
    ``rollout.play_games`` records a game's teams: each (game, group) a stream of its live
    agents' rows, closed by ``end_round`` with the survivors' last observation after the time
    limit, and with none after a wipe-out."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, N_ACTIONS, "cpu")
        self.numpy = ReplayBuffer(10**6, N_ACTIONS)

    def begin_round(self, streams, slots):
        super().begin_round(streams, slots)
        self.streams, self.closing = list(streams), {}

    def add_step(self, state, decisions, result, playing):
        super().add_step(state, decisions, result, playing)
        self._close(state, decisions)
        for j, g in self.streams:
            if not playing[j]:
                continue
            alive = state[g].alive[j]
            obs, decision = team(state[g], decisions[g], j)
            terminal = bool(result.terminated[j])
            self.numpy.add_step(obs, decision, result.rewards[g][j][alive].numpy(),
                                result.groups[g].alive[j][alive].numpy(), terminal=terminal,
                                stream=(j, g))
            if result.done[j]:
                self.closing[j, g] = terminal

    def end_round(self, state, decisions):
        super().end_round(state, decisions)
        self._close(state, decisions)

    def _close(self, state, decisions):
        for (j, g), terminal in self.closing.items():
            obs, decision = team(state[g], decisions[g], j)
            self.numpy.end_round(obs, None if terminal else decision, stream=(j, g))
        self.closing = {}


def team(state, decision, j):
    """Game ``j``'s live agents of a group as numpy rows, and their decision (neighbours as rows
    among them), as ``rollout.play_games`` sees them."""
    alive = state.alive[j]
    slots = alive.nonzero().flatten()
    row = alive.cumsum(0) - 1
    neighbors = decision.neighbors[j][alive]
    obs = Observation(state.view[j][alive].numpy(), state.features[j][alive].numpy(),
                      slots.numpy().astype(np.int32), state.positions[j][alive].numpy())
    return obs, Decision(
        decision.actions[j][alive].numpy(), decision.neighbor_input[j][alive].numpy(),
        torch.where(neighbors >= 0, row[neighbors.clamp(min=0)], -1).numpy(),
        decision.neighbor_actions[j][alive].numpy())


def transitions(replay) -> list[tuple]:
    """Every sampleable transition of ``replay`` as one comparable tuple: s (view, features),
    action, reward, done, the neighbour inputs, the neighbours' previous actions and their
    observations, and, unless terminal, the same at s'."""
    ids = torch.as_tensor(replay.eligible_ids())
    sampler = DeviceReplay(replay.capacity, len(ids), torch.device("cpu"), with_neighbors=True)
    sampler.refresh(replay)
    b = sampler.batch(ids)

    def observed(rows):
        return tuple((b.view[r].numpy().tobytes(), b.features[r].numpy().tobytes())
                     for r in rows.tolist() if r >= 0)

    found = []
    for i in range(len(ids)):
        now = (observed(b.obs[i:i + 1]), int(b.action[i]), float(b.reward[i]), float(b.done[i]),
               b.neighbor_input[i].numpy().tobytes(),
               tuple(a for a in b.neighbor_actions[i].tolist() if a >= 0),
               observed(b.neighbors[i]))
        after = () if b.done[i] else (
            observed(b.next_obs[i:i + 1]), b.next_neighbor_input[i].numpy().tobytes(),
            tuple(a for a in b.next_neighbor_actions[i].tolist() if a >= 0),
            observed(b.next_neighbors[i]))
        found.append(now + after)
    return sorted(found)


@pytest.fixture(scope="module")
def played():
    """Two rounds of 8 battles at map 12, 30 steps, both sides recorded: in 6 the pretrained
    cmfq model (red) meets a random team (blue), and in round 0 at least two of these end in a
    wipe-out; in 2 both teams act at random, and these run to the time limit whatever the model
    learned."""
    games = make_games("battle", 12, 8, backend="torch", max_steps=30)
    model = load_checkpoint("pretrained:cmfq-battle").policy(seed=0)
    replay = BothReplays(10**6)
    results = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the small forwards wait for a second thread on a busy machine
    try:
        for round_index in range(2):
            results.append(play_on_tensors(
                games, [{"red": model}] * 6 + [{}] * 2,
                seeds=[10 * round_index + j for j in range(8)],
                record=[{"red": replay, "blue": replay}] * 8))
    finally:
        torch.set_num_threads(threads)
    return replay, results


def test_the_slot_replay_records_the_numpy_replays_transitions(played):
    replay, results = played
    ends = [(r.steps, r.groups["blue"].survivors) for r in results[0]]
    assert sum(blue == 0 for _, blue in ends) >= 2  # wiped out
    assert sum(steps == 30 and blue > 0 for steps, blue in ends) >= 2  # the time limit
    assert replay.added == replay.numpy.added == len(replay) == len(replay.numpy)
    # A wiped-out game's survivors see 0 / 0 in the minimap: never stored.
    assert all(torch.isfinite(t.float()).all() for t in replay.rows.values())
    mine, theirs = transitions(replay), transitions(replay.numpy)
    assert mine == theirs
    done = [t[3] for t in mine]
    assert 0 < sum(done) < len(done)


def test_the_tallies_are_the_games(played):
    replay, results = played
    for rounds in results:
        for r in rounds:
            red, blue = r.groups["red"], r.groups["blue"]
            assert red.initial == blue.initial == 5
            assert red.kills == blue.initial - blue.survivors
            assert blue.kills == red.initial - red.survivors
            assert r.steps == 30 or (r.steps < 30 and 0 in (blue.survivors, red.survivors))
    # Every agent's every step is a transition of the replay (both groups of every game are
    # recorded): the games' rewards are the transitions' (float32 sums, 1e-6 of their size).
    recorded = replay.rows["reward"][replay.rows["transition"]].double()
    tallied = sum(g.reward for rounds in results for r in rounds for g in r.groups.values())
    assert tallied == pytest.approx(recorded.sum().item(), abs=1e-6 * recorded.abs().sum().item())


def coded_slot_replay(capacity: int, steps: int, n: int = 4, games: int = 2):
    """A slot replay of one round of ``games`` one-group games of ``n`` slots whose every
    observation's feature is its code 100 * entry + 10 * game + slot; slot 0 dies at step 2,
    the others live to the time limit."""
    from cmfq.algos import GroupDecision
    from cmfq.envs import GamesStep, GroupState

    replay = SlotReplay(capacity, 3, "cpu")
    replay.begin_round([(j, "g") for j in range(games)], n)
    alive = torch.ones(games, n, dtype=torch.bool)
    none = torch.full((games, n, 1), -1)
    decision = GroupDecision(torch.zeros(games, n, dtype=torch.long), torch.zeros(games, n, 3),
                             none, none)
    for step in range(steps + 1):
        code = (100 * step + 10 * torch.arange(games)[:, None] + torch.arange(n)).float()
        state = GroupState(torch.zeros(games, n, 3, 3, 1), code[..., None],
                           torch.zeros(games, n, 2, dtype=torch.long), alive.clone())
        if step == steps:
            replay.end_round({"g": state}, {"g": decision})
            break
        after = alive.clone()
        after[:, 0] &= step != 2
        result = GamesStep({"g": state._replace(alive=after)}, {"g": torch.zeros(games, n)},
                           torch.full((games,), step == steps - 1),
                           torch.zeros(games, dtype=torch.bool))
        replay.add_step({"g": state}, {"g": decision}, result, torch.ones(games, dtype=bool))
        alive = after
    return replay


def test_draws_are_uniform_over_the_eligible_transitions():
    # 5 entries of 8 rows kept (capacity 40) of a round of 6: entry 0's are overwritten, and
    # entry 5, the final observations, holds no transitions.
    replay = coded_slot_replay(40, steps=5)
    eligible = {100 * e + 10 * j + i for e in range(1, 5) for j in range(2) for i in range(4)
                if i or e <= 2}
    assert len(replay) == len(eligible) == 28
    sampler = DeviceReplay(replay.capacity, 64, torch.device("cpu"), with_neighbors=False)
    sampler.refresh(replay)
    sampler.seed(3)
    drawn = []
    for _ in range(300):
        sampler.next_draw()
        batch = sampler.sample()
        drawn.append(batch.features[batch.obs, 0])
    codes, counts = torch.unique(torch.cat(drawn), return_counts=True)
    assert set(codes.long().tolist()) == eligible
    # Uniform: Pearson's statistic of the 28 codes' counts (27 degrees of freedom) stays below
    # the chi-square's 1 - 1e-4 quantile, 63.16 (torch.special.gammaincc(13.5, x / 2) = 1e-4),
    # for all but one seed in 10,000.
    expected = counts.sum() / len(eligible)
    assert ((counts - expected) ** 2 / expected).sum() < 63.16


def test_a_torch_backend_run_trains_on_tensors_and_resumes_exactly(tmp_path):
    config = dict(env="battle", env_backend="torch", algo="amfq", map_size=20, max_steps=15,
                  games_per_round=2, rounds=3, temperature_decay_rounds=3, batch_size=32,
                  replay_rows=20000, save_every=1,
                  device="cpu")
    straight = train(TrainConfig(out=str(tmp_path / "a"), **config), progress=False)
    cut = train(TrainConfig(out=str(tmp_path / "b"), **dict(config, rounds=2)), progress=False)
    resume(cut, rounds=3, progress=False)
    assert_same_run(straight, cut)
    saved = load_checkpoint(straight / "resume.pt").training_state["replay"]
    assert saved["entries"] == 3 * 16  # each round: 15 steps and the final observations
    rows = read_metrics(straight / "metrics.csv")
    # Self-play, both sides recorded: a round's transitions are its agents' steps, and the ring
    # (20,000 rows of 4 x n) keeps them all; updates: replay_ratio 1 x new / batch_size.
    new = np.diff([0] + [r["buffer"] for r in rows])
    assert all(new > 0)
    for r, n in zip(rows, new, strict=True):
        assert r["steps"] == 2 * 15
        assert r["updates"] == math.ceil(n / 32)
        assert math.isfinite(r["loss"]) and r["loss"] > 0
        assert 0 <= r["survivors"] <= 16 and 0 <= r["kills"] <= 16  # 16 a side at map 20
        assert r["win"] in (0, 0.5, 1)


def test_a_replay_saved_by_the_numpy_buffer_is_refused():
    with pytest.raises(ValueError, match="saved by the numpy ReplayBuffer"):
        SlotReplay(100, 3, "cpu").load_state_dict(ReplayBuffer(100, 3).state_dict())


def test_random_teams_draw_the_same_alone_or_together():
    alive = torch.rand(5, 40, generator=torch.Generator().manual_seed(0)) < 0.8
    policies = [RandomPolicy(21, seed=seed) for seed in (4, 4, 5, 6, 7)]
    # Teams 0 and 1 of the seed-4 policy (say its red and blue), one team of each other.
    together = act_at_random(policies, [0, 1, 0, 0, 0], alive)
    for t, team in enumerate([0, 1, 0, 0, 0]):
        alone = RandomPolicy(21, seed=policies[t].seed)
        rows = alive[t].expand(team + 1, -1)  # act's row k is its policy's team k
        assert torch.equal(alone.act(GroupState(None, None, None, rows), None)[team],
                           together[t])
    assert all(p.steps == 1 for p in policies)  # each policy counted one step
    assert not torch.equal(act_at_random(policies, [0, 1, 0, 0, 0], alive), together)
    live = together[alive]
    assert (together[~alive] == 0).all() and live.min() >= 0 and live.max() < 21
    # Uniform over 21 actions: Pearson's statistic of about 160 draws (20 degrees of freedom)
    # below the chi-square's 1 - 1e-4 quantile, 52.39.
    counts = torch.bincount(live, minlength=21).double()
    expected = counts.sum() / 21
    assert ((counts - expected) ** 2 / expected).sum() < 52.39
