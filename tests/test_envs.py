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
        assert obs[g].view.shape == (64, 13, 13, 5)
        assert len(np.unique(obs[g].positions, axis=0)) == 64
    # Red stands left of blue.
    assert obs["red"].positions[:, 0].max() < obs["blue"].positions[:, 0].min()


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
            np.testing.assert_array_equal(env.positions(g), now.positions)
        done = result.done
    assert steps == env.step_count <= 40
    assert steps == 40 or any(env.num_alive(g) == 0 for g in env.groups)


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


@pytest.mark.parametrize(
    ("name", "size", "options", "match"),
    [
        ("chess", 20, {}, "unknown env"),
        ("battle", 12, {"agents_per_side": 40}, "too small"),
        ("tiger-deer", 10, {"n_deer": 500}, "too small"),
        ("tiger-deer", 20, {"n_tigers": 1}, "n_tigers"),
        ("battle", 20, {"colour": "red"}, "bad option"),
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
