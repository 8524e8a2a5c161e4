"""``cmfq.envs.games``: G games as tensors on both backends. The same games, seeds and actions give
the same trajectories on magent2 (``EnvGames``, the reference) and on the torch games
(``TorchGames``), with the attack order replayed from magent2's generator as
``tests/magent2_twin.py`` does; games that end wait, unchanged, for the others."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from magent2_twin import Minstd, magent2_order, random_actions

from cmfq.envs import EnvGames, TorchGames, make_games
from cmfq.envs.games import TORCH_GAMES


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def game_view(world, j: int) -> SimpleNamespace:
    """Game j of a torch world as the one-game world that ``random_actions`` reads."""
    return SimpleNamespace(
        map_size=world.map_size, alive=world.alive[j : j + 1], pos=world.pos[j : j + 1],
        group_of_slot=world.group_of_slot, groups=world.groups, n_moves=world.n_moves,
        n_actions=world.n_actions, _delta=world._delta)


def twins(game: str, map_size: int, seeds: list[int], **options) -> tuple[EnvGames, TorchGames]:
    """Both backends started in the same state: magent2's placement of each seed."""
    reference = make_games(game, map_size, len(seeds), backend="magent2", **options)
    tensors = make_games(game, map_size, len(seeds), backend="torch", **options)
    start = reference.reset(seeds)
    tensors.reset(seeds)
    world = tensors.world
    pos = torch.cat([start[g].positions for g in world.groups], 1)
    walls = torch.zeros(len(seeds), map_size, map_size, dtype=torch.bool)
    for j, env in enumerate(reference.envs):
        w = env.walls()
        walls[j, w[:, 1], w[:, 0]] = True
        env._engine.set_seed(seeds[j])  # the shuffle's generator, as the twin replays it
    world.set_state(pos, walls)
    return reference, tensors


@pytest.mark.parametrize("game, map_size, max_steps", [
    ("battle", 20, (40, 25)), ("tiger-deer", 20, (30, 30)), ("battle", 12, (60, 60))])
def test_both_backends_play_the_same_games(game, map_size, max_steps):
    seeds = [11, 12]
    # Games of different lengths: the magent2 envs each have their own max_steps; the torch
    # games end together, so here the shorter game is ended by the torch backend's own step.
    reference, tensors = twins(game, map_size, seeds, max_steps=max(max_steps))
    for env, steps in zip(reference.envs, max_steps, strict=True):
        env.max_steps = steps
    rngs = [Minstd(s) for s in seeds]
    rng = np.random.default_rng(0)
    world = tensors.world
    state = {g: tensors._group(g, world.observe(g)) for g in world.groups}
    deaths = steps = 0
    over = torch.zeros(len(seeds), dtype=torch.bool)
    while not over.all():
        actions = {g: torch.zeros(state[g].alive.shape, dtype=torch.long) for g in world.groups}
        order = torch.full((len(seeds), world.n_slots), world.n_slots, dtype=torch.long)
        for j in range(len(seeds)):
            chosen = random_actions(rng, game_view(world, j), 0.5, 0.9)
            attackers = []
            for k, g in enumerate(world.groups):
                live = state[g].alive[j].nonzero().flatten()
                actions[g][j, live] = torch.from_numpy(chosen[g])
                attackers += [int(world.slices[g].start + s) for s, a in zip(live, chosen[g])
                              if a >= world.n_moves[k]]
            if not over[j]:
                order[j] = magent2_order(rngs[j], attackers, world.n_slots)[0]
        theirs = reference.step(actions)
        # the torch games end by their own rule at max(max_steps): end the shorter one here
        mine = tensors.step(actions, order)
        short = theirs.done & ~mine.done
        if short.any():
            tensors._over = tensors._over | short
        for g in world.groups:
            for a, b in zip(theirs.groups[g], mine.groups[g], strict=True):
                if a.dtype == torch.long:  # the dead's cells: magent2 has none, compare the live
                    a, b = a[theirs.groups[g].alive], b[mine.groups[g].alive]
                # a wiped-out group's minimap density is 0 / 0 in both
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True,
                                           msg=f"{g}, step {steps}")
            assert torch.equal(theirs.rewards[g], mine.rewards[g]), (g, steps)
            deaths += int((state[g].alive & ~mine.groups[g].alive).sum())
        assert torch.equal(theirs.done, mine.done | short)
        assert torch.equal(theirs.terminated, mine.terminated)
        over = theirs.done
        state = mine.groups
        steps += 1
    assert deaths > 0
    assert steps == max(max_steps) or theirs.terminated.any()


def test_a_finished_game_stays_as_it_ended():
    games = make_games("tiger-deer", 15, 2, backend="torch", max_steps=5)
    games.reset([0, 1])
    games._over[0] = True
    world = games.world
    frozen = (world.pos[0].clone(), world.hp[0].clone(), world.step_count[0].clone())
    actions = {g: torch.ones(2, world.counts[g], dtype=torch.long) for g in world.groups}
    result = games.step(actions)
    assert torch.equal(world.pos[0], frozen[0]) and torch.equal(world.hp[0], frozen[1])
    assert world.step_count.tolist() == [int(frozen[2]), 1]
    assert all(not result.rewards[g][0].any() for g in world.groups)


def test_bad_backends_and_settings_are_refused():
    with pytest.raises(ValueError, match="unknown env backend"):
        make_games("battle", 20, 1, backend="jax")
    with pytest.raises(ValueError, match="the torch backend plays"):
        make_games("consensus", 20, 1, backend="torch")
    with pytest.raises(ValueError, match="no id embedding"):
        make_games("battle", 20, 1, backend="torch", id_embedding=True)
    games = make_games("battle", 20, 2, backend="torch")
    with pytest.raises(ValueError, match="2 games need 2 seeds"):
        games.reset([0])


@pytest.mark.parametrize("game", ["battle", "tiger-deer"])
@pytest.mark.parametrize("minimap_mode", [True, False])
def test_both_backends_have_the_same_shapes(game, minimap_mode):
    reference = make_games(game, 20, 1, backend="magent2", minimap_mode=minimap_mode)
    tensors = make_games(game, 20, 1, backend="torch", minimap_mode=minimap_mode)
    assert reference.specs == tensors.specs
    assert (reference.groups, reference.symmetric, reference.opponents) == (
        tensors.groups, tensors.symmetric, tensors.opponents)
    assert [tensors.won(a, b) for a, b in ((3, 0), (2, 2), (0, 1))] == [
        reference.won(a, b) for a, b in ((3, 0), (2, 2), (0, 1))]


@pytest.mark.parametrize("game, options", [("battle", {"layout": "shifted"}), ("tiger-deer", {})])
def test_a_torch_game_draws_the_same_alone_or_among_others(game, options):
    """Games started by ``reset_each`` play with their own attack orders, and restart
    (``reset_done``) when they end: each game's attack orders, placements, state and rewards are
    the same, step for step, alone and among any others."""
    world_type = TORCH_GAMES[game][0]

    def play(seeds: list[int]) -> list[dict[str, torch.Tensor]]:
        world = world_type(12, max_steps=6, **options)
        world.reset_each(seeds)
        rngs = [np.random.default_rng(seed) for seed in seeds]  # each game's actions its own
        trace = []
        for _ in range(20):
            actions = {g: torch.zeros(len(seeds), world.counts[g], dtype=torch.long)
                       for g in world.groups}
            for j, rng in enumerate(rngs):
                chosen = random_actions(rng, game_view(world, j), 0.5, 0.9)
                for g in world.groups:
                    actions[g][j, world.alive_mask(g)[j]] = torch.from_numpy(chosen[g])
            order, alive = world.attack_order(), world.alive
            result = world.step(actions)
            trace.append(dict(order=order, pos=world.pos, hp=world.hp, alive=world.alive,
                              walls=world.walls, died=alive & ~world.alive,
                              reward=torch.cat([result.rewards[g] for g in world.groups], 1),
                              done=result.done))
            world.reset_done(result.done)
            trace[-1]["restarted"] = world.pos
        return trace

    seeds = [3, 4, 5]
    alone = {seed: play([seed]) for seed in seeds}
    for company in (seeds, [5, 2**40, 3]):
        together = play(company)
        for j, seed in enumerate(company):
            if seed not in alone:
                continue
            for step, (mine, theirs) in enumerate(zip(together, alone[seed], strict=True)):
                for name, value in mine.items():
                    assert torch.equal(value[j], theirs[name][0]), (seed, step, name)
    ends = sum(int(t["done"].sum()) for t in together)
    deaths = sum(int(t["died"].sum()) for t in together)
    assert ends >= 6 and deaths > 0, (ends, deaths)
