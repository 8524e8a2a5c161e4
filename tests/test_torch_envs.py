"""The torch games against magent2: the same state, actions and attack order give the same next
state, rewards, deaths, observations and round ends; magent2's random attack order has the same
distribution as the torch games' own. The long check (10,000 steps a case) is
``python tests/magent2_twin.py``; its output is in benchmarks/results/."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import splitmix64_reference
from magent2_twin import Tally, Twin, run

from cmfq.envs import BattleEnv
from cmfq.envs.battle import block_positions, shifted_choices
from cmfq.envs.torch_battle import TorchBattle
from cmfq.envs.torch_grid import ATTACK, PLACE, circle_offsets
from cmfq.envs.torch_tiger_deer import TorchTigerDeer


@pytest.fixture(autouse=True)
def one_thread():
    """The games' tensors are small: one thread is fastest, and the CI machine has two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("game", ["battle", "tiger-deer"])
@pytest.mark.parametrize("map_size", [20, 40])
def test_random_steps_match_magent2(game, map_size, device):
    tally = run(game, map_size, steps=250, seed=map_size, max_steps=60, device=device)
    assert tally.total() == 0, (tally.mismatches, tally.first)
    assert tally.kills > 0 and tally.attacks > 0


# --- edge cases on a battle map of 20, agents placed by hand ----------------------------------
def move(dx, dy, speed=2.0):
    return circle_offsets(speed, 0.0).index((dx, dy))


def attack(dx, dy, n_moves=13, radius=1.5):
    return n_moves + circle_offsets(radius, 0.5).index((dx, dy))


def play(positions, steps, *, walls=(), seed=1, agents=None):
    """Run scripted ``steps`` (a list of {group: actions of the live agents}) in both engines
    from ``positions``; return the twin and the tally."""
    red, blue = positions
    twin = Twin("battle", 20, agents_per_side=agents or max(len(red), len(blue)), max_steps=50)
    twin.start(seed, {"red": red, "blue": blue}, np.array(walls, dtype=np.int32).reshape(-1, 2))
    tally = Tally()
    for actions in steps:
        twin.step({g: np.array(a, dtype=np.int64) for g, a in actions.items()}, tally)
    return twin, tally


def test_contested_cell_goes_to_the_first_mover():
    # red and blue both jump to (7, 5): red moves first and takes it
    twin, tally = play(([(5, 5)], [(9, 5)]), [{"red": [move(2, 0)], "blue": [move(-2, 0)]}])
    assert tally.total() == 0, tally.mismatches
    assert twin.game.pos[0].tolist() == [[7, 5], [9, 5]]


@pytest.mark.parametrize("leaver_first", [False, True])
def test_a_cell_left_earlier_in_the_order_is_free(leaver_first):
    # one red steps into the cell another red leaves: it succeeds only if the leaver went first
    mover, leaver = [(4, 5)], [(5, 5)]
    red = leaver + mover if leaver_first else mover + leaver
    acts = [move(2, 0), move(1, 0)] if leaver_first else [move(1, 0), move(2, 0)]
    twin, tally = play((red, [(15, 15), (15, 17)]), [{"red": acts, "blue": [move(0, 0)] * 2}])
    assert tally.total() == 0, tally.mismatches
    mover_slot = 1 if leaver_first else 0
    assert twin.game.pos[0, mover_slot].tolist() == ([5, 5] if leaver_first else [4, 5])


def test_walls_block_moves_and_attacks():
    # into the border, past the border, into an inner wall, next to a wall
    red = [(1, 5), (2, 8), (6, 6), (3, 12)]
    steps = [{"red": [move(-1, 0), move(-2, 0), move(1, 0), attack(-1, 0)],
              "blue": [move(0, 0)] * 4}]
    twin, tally = play((red, [(15, 3), (15, 5), (15, 7), (15, 9)]), steps,
                       walls=[(7, 6), (2, 12)])
    assert tally.total() == 0, tally.mismatches
    assert twin.game.pos[0, :3].tolist() == [[1, 5], [2, 8], [6, 6]]


def test_attacking_a_teammate_is_an_attack_on_nothing():
    twin, tally = play(([(5, 5), (6, 5)], [(7, 5), (15, 15)]),
                       [{"red": [attack(1, 0), attack(1, 0)], "blue": [move(0, 0)] * 2}])
    assert tally.total() == 0, tally.mismatches
    r = twin.game.last_reward[0].tolist()
    assert r[0] == pytest.approx(-0.105) and r[1] == pytest.approx(-0.005 - 0.1 + 0.2)
    assert twin.game.hp[0, 1] == pytest.approx(10.0) and twin.game.hp[0, 2] < 10


RING = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)]


@pytest.mark.parametrize("n_attackers", [5, 6])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_kill_takes_six_hits_and_the_dead_do_not_act(n_attackers, seed):
    # the blue in the middle attacks too: killed before its turn, its attack is skipped
    red = [(10 + dx, 10 + dy) for dx, dy in RING[:n_attackers]]
    steps = [{"red": [attack(-dx, -dy) for dx, dy in RING[:n_attackers]],
              "blue": [attack(1, 0), move(0, 0)]}]
    twin, tally = play((red, [(10, 10), (3, 17)]), steps, seed=seed, agents=6)
    assert tally.total() == 0, tally.mismatches
    game = twin.game
    blue = game.slices["blue"].start
    assert bool(game.alive[0, blue]) == (n_attackers == 5)
    if n_attackers == 6:
        rewards = game.last_reward[0, :6]
        assert int((rewards > 4).sum()) == 1  # one kill reward, and no attack bonus with it


def test_the_last_agent_of_a_team_ends_the_round():
    red = [(10 + dx, 10 + dy) for dx, dy in RING]
    steps = [{"red": [attack(-dx, -dy) for dx, dy in RING], "blue": [move(0, 0)]}]
    twin, tally = play((red, [(10, 10)]), steps, agents=6)
    assert tally.total() == 0, tally.mismatches
    assert tally.wiped == 1
    # magent2 divides the minimap of an empty team by its size, 0: the channel is NaN
    view = twin.game.observe("red").view
    assert view[..., 6].isnan().all() and not view[..., :6].isnan().any()


def test_tiger_pairs_and_deer_rewards():
    # two tigers on one deer share the pair reward; a third tiger alone on another deer gets none
    twin = Twin("tiger-deer", 20, n_tigers=3, n_deer=2, max_steps=50)
    twin.start(5, {"tiger": [(5, 6), (6, 5), (12, 13)], "deer": [(5, 5), (12, 12)]},
               np.zeros((0, 2), dtype=np.int32))
    def hit(delta):
        return 5 + circle_offsets(1, 0.5).index(delta)

    tally = Tally()
    twin.step({"tiger": np.array([hit((0, -1)), hit((-1, 0)), hit((0, -1))]),
               "deer": np.array([0, 2])}, tally)
    assert tally.total() == 0, tally.mismatches
    assert twin.game.last_reward[0].tolist() == pytest.approx([1, 1, 0, -0.2, -0.1])


def test_games_in_a_batch_are_independent():
    env = TorchTigerDeer(20)
    env.reset(3, seed=4)
    start = (env.pos.clone(), env.walls.clone())
    gen = torch.Generator().manual_seed(0)
    script = []
    for _ in range(30):
        acts = {g: torch.randint(0, env.n_actions[k], (3, env.counts[g]), generator=gen)
                for k, g in enumerate(env.groups)}
        order = torch.rand(3, env.n_slots, generator=gen).argsort(1).argsort(1)
        script.append((acts, order))
        batched = env.step(acts, order)
    alone = TorchTigerDeer(20)
    for i in range(3):
        alone.set_state(start[0][i : i + 1], start[1][i : i + 1])
        for acts, order in script:
            out = alone.step({g: a[i : i + 1] for g, a in acts.items()}, order[i : i + 1])
        for g in env.groups:
            assert torch.equal(out.next_obs[g].view[0], batched.next_obs[g].view[i])
            assert torch.equal(out.rewards[g][0], batched.rewards[g][i])


def test_own_threads_play_the_same_game_and_give_torch_its_setting_back():
    games = {threads: TorchBattle(20, threads=threads) for threads in (None, 2)}
    gen = torch.Generator().manual_seed(0)
    first = {threads: game.reset(2, seed=5) for threads, game in games.items()}
    assert torch.equal(first[None]["red"].view, first[2]["red"].view)
    for _ in range(10):
        acts = {g: torch.randint(0, games[None].n_actions[k], (2, games[None].counts[g]),
                                 generator=gen) for k, g in enumerate(games[None].groups)}
        out = {threads: game.step(acts) for threads, game in games.items()}
        assert torch.get_num_threads() == 1  # the fixture's, set back after each step
        for g in games[None].groups:
            assert torch.equal(out[None].next_obs[g].view, out[2].next_obs[g].view)
            assert torch.equal(out[None].rewards[g], out[2].rewards[g])
    with pytest.raises(ValueError, match="threads"):
        TorchBattle(20, threads=0)


def test_shifted_layouts_are_drawn_per_game_as_in_battle():
    game = TorchBattle(40, layout="shifted")
    game.reset(16, seed=3)
    again = TorchBattle(40, layout="shifted")
    again.reset(16, seed=3)
    assert torch.equal(game.pos, again.pos)
    assert len({tuple(p.tolist()) for p in game.pos[:, 0]}) > 8  # each game its own layout
    for pos in game.pos.numpy():
        red, blue = pos[:64], pos[64:]
        # Two blocks of the published shape side by side at one height, inside the walls.
        assert (red - red[0] == blue - blue[0]).all() and red[0, 1] == blue[0, 1]
        assert pos.min() >= 1 and pos.max() <= 38
        assert abs((20 - red[:, 0].max()) - (blue[:, 0].min() - 20)) <= 2
    with pytest.raises(ValueError, match="layout"):
        TorchBattle(20, layout="random")


def test_bad_actions_are_refused():
    env = TorchBattle(20)
    env.reset(2, seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step({"red": torch.zeros(2, 3, dtype=torch.long), "blue": torch.zeros(2, 16)})
    with pytest.raises(ValueError, match="lie in"):
        env.step({"red": torch.full((2, 16), 21), "blue": torch.zeros(2, 16)})


# --- the attack order: a random shuffle in both ---------------------------------------------
def test_the_killer_among_six_is_uniform_in_both():
    """Six reds hit one blue at full HP: the sixth hit kills it, so who gets the kill is set by
    the attack order; each red should get it 1/6 of the time, in magent2 (its own shuffle) and in
    the torch game (its own), each within 4.5 standard errors of 1/6."""
    red = np.array([(10 + dx, 10 + dy, 0) for dx, dy in RING], dtype=np.int32)
    acts = np.array([attack(-dx, -dy) for dx, dy in RING], dtype=np.int32)
    trials = 1200
    env = BattleEnv(20, seed=0, agents_per_side=6, max_steps=5)
    counts_magent2 = np.zeros(6)
    for seed in range(trials):
        env.reset(seed)
        eng = env._engine
        eng.reset()
        eng.add_agents(env._handles["red"], method="custom", pos=red)
        eng.add_agents(env._handles["blue"], method="custom",
                       pos=np.array([(10, 10, 0)], dtype=np.int32))
        eng.set_seed(seed + 1)
        out = env.step({"red": acts, "blue": np.zeros(1, dtype=np.int32)})
        counts_magent2 += out.rewards["red"] > 4
    game = TorchBattle(20, agents_per_side=6)
    dead_blues = [[3, 3 + 2 * i] for i in range(5)]
    pos = torch.tensor([[x, y] for x, y, _ in red] + [[10, 10]] + dead_blues)
    alive = torch.zeros(trials, 12, dtype=torch.bool)
    alive[:, :7] = True
    game.set_state(pos.expand(trials, -1, -1), game.border(trials), alive=alive)
    out = game.step({"red": torch.from_numpy(acts).long().expand(trials, -1),
                     "blue": torch.zeros(trials, 6, dtype=torch.long)})
    counts_torch = (out.rewards["red"] > 4).sum(0).numpy()
    p = 1 / 6
    bound = 4.5 * math.sqrt(p * (1 - p) / trials)
    for counts in (counts_magent2, counts_torch):
        assert counts.sum() == trials
        assert np.abs(counts / trials - p).max() < bound, counts


def test_reset_done_restarts_only_the_finished_games():
    env = TorchTigerDeer(20)
    env.reset(4, seed=2)
    for _ in range(5):
        env.step({g: torch.zeros(4, env.counts[g], dtype=torch.long) for g in env.groups})
    before = (env.pos.clone(), env.walls.clone(), env.step_count.clone())
    done = torch.tensor([True, False, True, False])
    env.reset_done(done)
    assert env.step_count.tolist() == [0, 5, 0, 5]
    assert torch.equal(env.pos[~done], before[0][~done])
    assert torch.equal(env.walls[~done], before[1][~done])
    assert not torch.equal(env.walls[done], before[1][done])  # new random walls
    assert env.alive[done].all() and (env.last_action[done] == -1).all()
    # the restarted games' draws: their next placement, and their attack orders go on counting
    assert env.rounds.tolist() == [1, 0, 1, 0] and env.played.tolist() == [5] * 4


# --- the draws: each game's own, from its seed and counters -----------------------------------
def test_the_draws_are_the_documented_ones(device):
    """Tiger-deer's placement and the attack orders, on any device, against SplitMix64 in
    Python ints: a placement sorts the inner cells by the draws of (seed, PLACE, round, cell),
    an attack order the slots by those of (seed, ATTACK, step played, slot)."""
    env = TorchTigerDeer(12, max_steps=3, device=device)
    seeds = [7, 2**63 + 5]
    env.reset_each(seeds)

    def draws(seed, stream, counter, n):
        key = splitmix64_reference(splitmix64_reference(seed, stream), counter)
        return [splitmix64_reference(key, i) for i in range(n)]

    def sorted_by(keys):  # indices by key as int64, equal keys by index
        return sorted(range(len(keys)), key=lambda i: (keys[i], i))

    def placement(seed, round_):
        cells = sorted_by(draws(seed, PLACE, round_, 10 * 10))[: env.n_walls + env.n_slots]
        return [[c % 10 + 1, c // 10 + 1] for c in cells[env.n_walls :]]

    assert env.pos.tolist() == [placement(s, 0) for s in seeds]
    still = circle_offsets(1, 0).index((0, 0))
    stay = {g: torch.full((2, env.counts[g]), still, device=device) for g in env.groups}
    for played in range(5):
        expected = []
        for s in seeds:
            rank = [0] * env.n_slots
            for r, slot in enumerate(sorted_by(draws(s, ATTACK, played, env.n_slots))):
                rank[slot] = r
            expected.append(rank)
        assert env.attack_order().tolist() == expected
        done = env.step(stay).done
        env.reset_done(done)
        assert bool(done.all()) == (played == 2)
        if played == 2:  # both games start their round 1
            assert env.pos.tolist() == [placement(s, 1) for s in seeds]
    assert env.played.tolist() == [5, 5] and env.rounds.tolist() == [1, 1]


def test_shifted_layouts_are_uniform_over_the_choices():
    """4,096 draws over the 3 gaps x 24 offsets of map 40: every layout is drawn, each about
    1/72 of the time (within 4.5 binomial standard errors)."""
    game = TorchBattle(40, layout="shifted")
    gaps, offsets = shifted_choices(40, 64)
    layouts = {}
    for gap in gaps:
        for offset in offsets:
            pair = np.concatenate(block_positions(40, 64, gap, offset))[:, :2].astype(np.int64)
            layouts[pair.tobytes()] = 0
    pos, walls = game._place(torch.arange(4096))
    for p in pos.numpy():
        layouts[p.tobytes()] += 1  # a KeyError: a layout BattleEnv never draws
    counts = np.array(list(layouts.values()))
    p = 1 / len(counts)
    assert len(counts) == 72 and counts.sum() == 4096
    assert np.abs(counts - 4096 * p).max() < 4.5 * math.sqrt(4096 * p * (1 - p)), counts
    assert torch.equal(walls, game.border(4096))
