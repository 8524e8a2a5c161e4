import numpy as np
import pytest
import torch

from cmfq.envs import neighbor_actions, neighborhood, neighborhoods, slot_neighborhoods


def brute_force(positions, radius, k_max):
    n = len(positions)
    out = np.full((n, k_max), -1)
    for i in range(n):
        near = sorted(
            (int(((positions[i] - positions[j]) ** 2).sum()), j)
            for j in range(n)
            if j != i and ((positions[i] - positions[j]) ** 2).sum() <= radius**2
        )
        for slot, (_, j) in enumerate(near[:k_max]):
            out[i, slot] = j
    return out


@pytest.mark.parametrize("case", range(40))
@pytest.mark.parametrize("method", ["all pairs", "grid"])
def test_matches_brute_force_loop(case, method, monkeypatch):
    if method == "grid":  # the grid serves large teams; here it gets the small ones too
        monkeypatch.setattr(neighborhood, "ALL_PAIRS_MAX", 0)
    rng = np.random.default_rng(case)
    n = int(rng.integers(0, 50))
    # Duplicated positions and ties in distance are frequent on this small grid.
    positions = rng.integers(-4, 12, size=(n, 2))
    radius = float(rng.choice([0.0, 1.0, 1.5, 3.0, 6.0, 30.0]))
    k_max = int(rng.integers(1, 12))
    got = neighborhoods(positions, radius=radius, k_max=k_max)
    np.testing.assert_array_equal(got, brute_force(positions, radius, k_max))


def test_global_is_the_whole_team_but_self():
    positions = np.array([[0, 0], [50, 50], [3, 1]])
    np.testing.assert_array_equal(
        neighborhoods(positions, radius=None, k_max=1), [[1, 2], [0, 2], [0, 1]]
    )


def test_large_team_shape_and_validity():
    rng = np.random.default_rng(0)
    cells = rng.permutation(150 * 150)[:5000]
    positions = np.stack([cells // 150, cells % 150], 1)
    got = neighborhoods(positions, radius=6, k_max=32)
    assert got.shape == (5000, 32)
    rows, slots = np.nonzero(got >= 0)
    dist = np.linalg.norm(positions[rows] - positions[got[rows, slots]], axis=1)
    assert (dist <= 6).all() and (got[rows, slots] != rows).all()


def test_neighbor_actions_masks_missing_and_first_step():
    nbrs = np.array([[1, -1], [0, -1]])
    np.testing.assert_array_equal(neighbor_actions(nbrs, np.array([4, 7])), [[7, -1], [4, -1]])
    np.testing.assert_array_equal(neighbor_actions(nbrs, None), [[-1, -1], [-1, -1]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="k_max"):
        neighborhoods(np.zeros((3, 2)), radius=2, k_max=0)
    with pytest.raises(ValueError, match="shape"):
        neighborhoods(np.zeros((3, 3)), radius=2, k_max=2)
    with pytest.raises(ValueError, match="k_max"):
        slot_neighborhoods(torch.zeros(1, 3, 2), torch.ones(1, 3, dtype=torch.bool), radius=2,
                           k_max=0)
    with pytest.raises(ValueError, match="alive"):
        slot_neighborhoods(torch.zeros(1, 3, 2), torch.ones(3, dtype=torch.bool), radius=2,
                           k_max=2)


def numpy_in_slots(positions, alive, radius, k_max):
    """``neighborhoods`` of each game's live agents alone, in slot terms: [G, n, K], -1 pads."""
    games, n = alive.shape
    width = max(n - 1, 0) if radius is None else k_max
    out = np.full((games, n, width), -1)
    for j in range(games):
        live = np.flatnonzero(alive[j])
        ranks = neighborhoods(positions[j][live], radius=radius, k_max=k_max)
        out[j, live, :ranks.shape[1]] = np.where(ranks >= 0, live[np.clip(ranks, 0, None)], -1)
    return out


@pytest.mark.parametrize("case", range(60))
def test_slot_neighborhoods_are_each_games_live_neighbourhoods(case):
    rng = np.random.default_rng(case)
    games, n = int(rng.integers(1, 6)), int(rng.choice([0, 1, 2, 7, 30, 64]))
    # A small grid: shared cells and ties in distance are frequent; the dead keep a position.
    positions = rng.integers(-4, 12, size=(games, n, 2))
    alive = rng.random((games, n)) < rng.choice([0.0, 0.3, 0.8, 1.0])
    radius = rng.choice([None, 0.0, 1.0, 1.5, 3.0, 6.0, 30.0])
    k_max = int(rng.integers(1, 70))  # often more than the team
    got = slot_neighborhoods(torch.from_numpy(positions), torch.from_numpy(alive),
                             radius=radius, k_max=k_max)
    assert got.dtype == torch.long
    np.testing.assert_array_equal(got.numpy(), numpy_in_slots(positions, alive, radius, k_max))


def test_slot_neighborhoods_in_chunks_of_games(monkeypatch):
    rng = np.random.default_rng(0)
    positions = torch.from_numpy(rng.integers(0, 10, size=(7, 20, 2)))
    alive = torch.from_numpy(rng.random((7, 20)) < 0.7)
    whole = slot_neighborhoods(positions, alive, radius=3.0, k_max=6)
    monkeypatch.setattr(neighborhood, "SLOT_PAIRS_MAX", 2 * 20 * 20)  # 2 games at a time
    np.testing.assert_array_equal(
        slot_neighborhoods(positions, alive, radius=3.0, k_max=6).numpy(), whole.numpy())
