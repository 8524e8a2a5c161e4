import numpy as np
import pytest

from cmfq.envs import make_env


def random_actions(env, rng):
    return {g: rng.integers(0, env.specs[g].n_actions, env.num_alive(g)) for g in env.groups}


def test_battle_places_original_mfq_blocks():
    env = make_env("battle", 40, seed=0)
    obs = env.reset()
    assert env.groups == ("red", "blue")
    for g in env.groups:
        assert obs[g].view.shape == (64, 13, 13, 7)  # the minimap adds two channels
        assert len(np.unique(obs[g].positions, axis=0)) == 64
    # Red stands left of blue.
    assert obs["red"].positions[:, 0].max() < obs["blue"].positions[:, 0].min()


@pytest.mark.parametrize("map_size", [20, 40, 80])
def test_shifted_layouts_are_drawn_from_the_reset_seed_and_mirror_symmetric(map_size):
    from cmfq.envs.battle import PUBLISHED_GAP, SHIFTED_GAPS, block_positions

    env = make_env("battle", map_size, seed=0, layout="shifted")
    n = env.agents_per_side
    fixed = make_env("battle", map_size, seed=0)
    fixed.reset(5)
    assert (fixed.positions("red") == block_positions(map_size, n)[0][:, :2]).all()
    layouts = set()
    for seed in range(40):
        env.reset(seed)
        red, blue = env.positions("red"), env.positions("blue")
        again = make_env("battle", map_size, seed=1, layout="shifted")
        again.reset(seed)  # the reset's seed alone draws it, whatever the env's own seed
        assert (again.positions("red") == red).all() and (again.positions("blue") == blue).all()
        # Mirror-symmetric: blue is red moved right, and the gaps to the middle column match.
        shift = blue[0, 0] - red[0, 0]
        assert (blue == red + [shift, 0]).all()
        left_gap = (map_size // 2) - red[:, 0].max()
        right_gap = blue[:, 0].min() - (map_size // 2)
        assert abs(left_gap - right_gap) <= 2  # on every other cell, as the published layout
        for team in (red, blue):
            assert team.min() >= 1 and team.max() <= map_size - 2 and len(team) == n
        layouts.add((int(right_gap), int(red[:, 1].min())))
    assert len({row for _, row in layouts}) > 10  # up and down
    widest = map_size // 2 - 2 * np.ceil(np.sqrt(n)) - 1
    if widest >= SHIFTED_GAPS[0]:  # room to move the blocks apart or together
        assert len({gap for gap, _ in layouts}) == min(widest, SHIFTED_GAPS[1])
    else:  # at the borders already: only up and down
        assert {gap for gap, _ in layouts} == {block_positions(map_size, n, PUBLISHED_GAP)[1][
            :, 0].min() - map_size // 2}


def test_step_keeps_survivor_order_and_ends_at_max_steps():
    env = make_env("battle", 12, seed=1, max_steps=40)
    rng = np.random.default_rng(0)
    env.reset()
    done, steps = False, 0
    while not done:
        result = env.step(random_actions(env, rng))
        steps += 1
        for g in env.groups:
            alive = result.alive[g]
            now = env.observe(g)
            np.testing.assert_array_equal(result.next_obs[g].ids[alive], now.ids)
            np.testing.assert_array_equal(result.next_obs[g].view[alive], now.view)
            np.testing.assert_array_equal(result.next_obs[g].features[alive], now.features)
            assert not result.next_obs[g].view[~alive].any()
            np.testing.assert_array_equal(env.positions(g), now.positions)
        done = result.done
    assert steps == env.step_count <= 40
    wiped_out = any(env.num_alive(g) == 0 for g in env.groups)
    assert steps == 40 or wiped_out
    assert result.terminated == wiped_out


def test_a_wipe_out_is_terminal_and_a_time_limit_is_not():
    short = make_env("battle", 12, seed=0, agents_per_side=1, max_steps=2)
    short.reset()
    short.step({"red": np.array([0]), "blue": np.array([0])})
    result = short.step({"red": np.array([0]), "blue": np.array([0])})
    assert result.done and not result.terminated
    # Tigers losing all their HP in one step: the round ends, terminated.
    doomed = make_env("tiger-deer", 12, seed=0, n_tigers=2, n_deer=3, tiger_step_recover=-20.0)
    doomed.reset()
    result = doomed.step({g: np.zeros(doomed.num_alive(g), np.int64) for g in doomed.groups})
    assert not result.alive["tiger"].any() and result.done and result.terminated


@pytest.mark.parametrize("env_name", ["battle", "tiger-deer"])
def test_minimap_and_id_embedding_shape_the_observation(env_name):
    def shapes(**options):
        env = make_env(env_name, 20, seed=0, **options)
        spec = env.specs[env.groups[0]]
        return spec.view_shape[2], spec.feature_dim

    channels, features = shapes(minimap_mode=False, id_embedding=False)
    assert shapes(minimap_mode=True, id_embedding=False) == (channels + 2, features + 2)
    assert shapes(minimap_mode=False, id_embedding=True) == (channels, features + 10)
    # Without the id embedding the shapes do not depend on the map: a network moves to a bigger one.
    big = make_env(env_name, 40, seed=0).specs[make_env(env_name, 40, seed=0).groups[0]]
    assert (big.view_shape[2], big.feature_dim) == shapes()


def test_last_reward_feature_is_the_step_just_played():
    env = make_env("battle", 20, seed=0, step_reward=-0.5, attack_penalty=0.0,
                   attack_opponent_reward=0.0, dead_penalty=0.0)
    env.reset()
    result = env.step({g: np.zeros(env.num_alive(g), np.int64) for g in env.groups})
    # The features end with the last reward (then, with the minimap, the position): after one
    # step every agent's is the step reward it just received.
    np.testing.assert_allclose(result.rewards["red"], -0.5)
    np.testing.assert_allclose(env.observe("red").features[:, -3], -0.5)


def test_observations_are_copies():
    env = make_env("battle", 20, seed=0)
    first = env.reset()["red"]
    kept = first.view.copy()
    env.step(random_actions(env, np.random.default_rng(0)))
    env.observe("red")
    np.testing.assert_array_equal(first.view, kept)


def test_reset_seed_reproduces_a_round():
    def play(seed):
        env = make_env("tiger-deer", 20, seed=0)
        rng = np.random.default_rng(3)
        trace = [env.reset(seed)["deer"].positions.copy()]
        for _ in range(20):
            env.step(random_actions(env, rng))
            trace.append(env.positions("tiger").copy())
        return trace

    a, b, c = play(5), play(5), play(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_tiger_deer_counts():
    env = make_env("tiger-deer", 20, seed=0, n_tigers=6, n_deer=9)
    obs = env.reset()
    assert env.groups == ("tiger", "deer")
    assert obs["tiger"].view.shape[0] == 6 and obs["deer"].view.shape[0] == 9


def tiger_rewards(env, actions: tuple[int, int]) -> list[float]:
    """The tigers' rewards for one step of a deer between two tigers, the deer staying."""
    engine, deer, tigers = env._engine, env._handles["deer"], env._handles["tiger"]
    engine.reset()
    engine.add_agents(deer, method="custom", pos=[(5, 5, 0)])
    engine.add_agents(tigers, method="custom", pos=[(4, 5, 0), (6, 5, 0)])
    engine.set_action(deer, np.zeros(1, dtype=np.int32))
    engine.set_action(tigers, np.array(actions, dtype=np.int32))
    engine.step()
    return engine.get_reward(tigers).tolist()


def test_tigers_are_paid_only_for_attacking_a_deer_together():
    # The engine's reward rule, checked directly for every pair of tiger actions. Only both
    # attacking the deer pays (0.5, fired for both orders).
    env = make_env("tiger-deer", 12, seed=0, n_tigers=2, n_deer=1, wall_density=0.0)
    n = env.specs["tiger"].n_actions
    paid = {(a, b): r for a in range(n) for b in range(n) if any(r := tiger_rewards(env, (a, b)))}
    assert len(paid) == 1 and list(paid.values()) == [[1.0, 1.0]]


def test_the_attack_reward_pays_a_tiger_for_each_attack_on_a_deer():
    # Tiger 0 attacks the deer alone, then both do (the pair's +1 each on top). The attack
    # actions are the one pair the plain game pays for (test above).
    plain, shaped = (make_env("tiger-deer", 12, seed=0, n_tigers=2, n_deer=1, wall_density=0.0,
                              tiger_attack_reward=reward) for reward in (0.0, 0.25))
    n = plain.specs["tiger"].n_actions
    pair = next((a, b) for a in range(n) for b in range(n) if any(tiger_rewards(plain, (a, b))))
    alone = (pair[0], 2)  # 2: stay
    assert tiger_rewards(plain, alone) == [0.0, 0.0]
    assert tiger_rewards(shaped, alone) == [0.25, 0.0]
    assert tiger_rewards(shaped, pair) == [1.25, 1.25]


def test_tiger_deer_densities_set_the_counts():
    assert make_env("tiger-deer", 20, seed=0).n_tigers == 4  # magent2's 0.01 a cell
    env = make_env("tiger-deer", 20, seed=0, tiger_density=0.05, deer_density=0.1)
    obs = env.reset()
    assert obs["tiger"].view.shape[0] == 20 and obs["deer"].view.shape[0] == 40
    assert make_env("tiger-deer", 20, seed=0, tiger_density=0.05, n_tigers=3).n_tigers == 3


def test_tigers_that_recover_do_not_starve():
    # 10 HP at -0.1 a step: without deer, plain tigers are all dead after 100 steps.
    def steps(recover: float) -> int:
        env = make_env("tiger-deer", 12, seed=0, n_tigers=2, n_deer=1, max_steps=150,
                       tiger_step_recover=recover)
        env.reset()
        stay = {"tiger": np.zeros(2, dtype=np.int32), "deer": np.zeros(1, dtype=np.int32)}
        done = False
        while not done:
            done = env.step(stay).done
        return env.step_count

    assert steps(-0.1) == 100 and steps(0.0) == 150


@pytest.mark.parametrize(
    ("name", "size", "options", "match"),
    [
        ("chess", 20, {}, "unknown env"),
        ("battle", 12, {"agents_per_side": 40}, "too small"),
        ("tiger-deer", 10, {"n_deer": 500}, "too small"),
        ("tiger-deer", 20, {"n_tigers": 1}, "n_tigers"),
        ("tiger-deer", 20, {"deer_density": 0.0}, "deer_density"),
        ("battle", 20, {"colour": "red"}, "bad option"),
        ("battle", 20, {"layout": "random"}, "layout must be one of"),
    ],
)
def test_bad_configs_raise(name, size, options, match):
    with pytest.raises(ValueError, match=match):
        make_env(name, size, seed=0, **options)


def test_bad_actions_raise():
    env = make_env("battle", 20, seed=0)
    env.reset()
    with pytest.raises(ValueError, match="live agents"):
        env.step({"red": np.zeros(3), "blue": np.zeros(env.num_alive("blue"))})
    with pytest.raises(ValueError, match="must lie in"):
        env.step({g: np.full(env.num_alive(g), 99) for g in env.groups})


def test_a_wiped_out_group_is_observed_without_asking_magent2(monkeypatch):
    # magent2's observation reads the first agent of the group even when it has none, which
    # crashes now and then: an empty group's observation has no rows, made here.
    env = make_env("tiger-deer", 12, seed=0, n_tigers=2, n_deer=3, tiger_step_recover=-20.0)
    env.reset(seed=0)
    result = env.step({g: np.zeros(env.num_alive(g), np.int32) for g in env.groups})
    assert result.terminated and env.num_alive("tiger") == 0
    monkeypatch.setattr(env._engine, "get_observation",
                        lambda handle: pytest.fail("magent2 was asked to observe no agents"))
    obs = env.observe("tiger")
    spec = env.specs["tiger"]
    assert obs.view.shape == (0, *spec.view_shape) and obs.features.shape == (0, spec.feature_dim)
    assert obs.ids.shape == (0,) and obs.positions.shape == (0, 2)
    assert result.next_obs["tiger"].view.shape == (2, *spec.view_shape)  # the dead's rows: zeros
