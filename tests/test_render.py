"""Replay frames (agents, health, walls, attacks, legend), the GIF and MP4 writers, and what the
envs tell a replay."""

import sys

import numpy as np
import pytest
from PIL import Image, ImageSequence

from cmfq.envs import make_env
from cmfq.evaluation.frames import (
    ATTACK,
    HEALTH,
    TEAM_COLOURS,
    WALL,
    WOUND,
    Team,
    banner_height,
    draw_frame,
)
from cmfq.evaluation.video import write_animation

CELL = 12


def teams(step):
    return [Team("red", np.array([[0, 0], [step, 1]])), Team("blue", np.array([[9, 9], [8, 2]]))]


def pixel(image, x, y, n_teams=2, dx=0.5, dy=0.5, cell=CELL):
    """The pixel at (dx, dy) of cell (x, y), as fractions of the cell."""
    top = banner_height(n_teams)
    return image.getpixel((int((x + dx) * cell), top + int((y + dy) * cell)))


def banner(image, n_teams=2):
    return np.asarray(image)[: banner_height(n_teams)]


def test_frame_draws_agents_in_team_colours():
    image = draw_frame(10, teams(3), step=3, cell=CELL)
    assert image.mode == "RGB" and image.size[0] >= 10 * CELL
    assert image.size[1] == banner_height(2) + 10 * CELL
    assert pixel(image, 0, 0) == TEAM_COLOURS[0]
    assert pixel(image, 3, 1) == TEAM_COLOURS[0]
    assert pixel(image, 9, 9) == TEAM_COLOURS[1]
    assert pixel(image, 5, 5) not in TEAM_COLOURS[:2]


def test_a_legend_wider_than_the_map_widens_every_frame_alike():
    long = [Team("red (algo=cmfq,seed=0)", np.array([[0, 0]])), Team("blue", np.empty((0, 2)))]
    first, later = (draw_frame(4, long, step=s, cell=CELL) for s in (0, 1))
    assert first.size[0] > 4 * CELL
    more_alive = long[:1] + [Team("blue", np.array([[3, 3], [2, 2]]))]
    assert first.size == later.size == draw_frame(4, more_alive, step=5, cell=CELL).size
    right = np.asarray(first)[:, 4 * CELL + 2:]
    assert (right != np.asarray(first)[0, -1]).any()  # the legend's text reaches past the map


def test_frame_sizes_are_even_for_video():
    image = draw_frame(11, teams(1), step=1, cell=5)  # 55 pixels of map
    assert image.size[0] % 2 == 0 and image.size[1] % 2 == 0


def test_health_bar_shows_the_health_left():
    team = Team("red", np.array([[1, 1], [4, 4]]), health=np.array([1.0, 0.25]))
    image = draw_frame(6, [team], step=1, cell=CELL)
    bar = 0.78  # the bar runs along the bottom of the agent's square
    assert pixel(image, 1, 1, 1, dx=0.3, dy=bar) == HEALTH
    assert pixel(image, 1, 1, 1, dx=0.7, dy=bar) == HEALTH
    assert pixel(image, 4, 4, 1, dx=0.3, dy=bar) == HEALTH
    assert pixel(image, 4, 4, 1, dx=0.7, dy=bar) == WOUND
    # Above the bar the square keeps its team colour.
    assert pixel(image, 4, 4, 1, dx=0.5, dy=0.3) == TEAM_COLOURS[0]
    with pytest.raises(ValueError, match="health"):
        draw_frame(6, [Team("red", np.array([[1, 1]]), health=np.ones(2))], step=1)


def test_walls_and_attacks_are_drawn_and_named_in_the_legend():
    plain = draw_frame(10, teams(3), step=3, cell=CELL)
    walls = np.array([[5, 5], [6, 5]])
    attacks = np.array([[0, 0, 2, 2]])  # red's agent at (0, 0) hits the cell (2, 2)
    image = draw_frame(10, teams(3), step=3, cell=CELL, walls=walls, attacks=attacks)
    assert pixel(image, 5, 5) == WALL and pixel(image, 6, 5) == WALL
    assert pixel(image, 2, 2) == ATTACK  # the dot on the target
    assert pixel(image, 1, 1) == ATTACK  # the line through the cell between them
    assert pixel(plain, 1, 1) != ATTACK
    # The legend gains a wall entry when there are walls.
    assert not np.array_equal(banner(plain), banner(image))
    assert np.array_equal(banner(plain), banner(draw_frame(10, teams(3), step=3, cell=CELL,
                                                           attacks=attacks)))


def test_frame_banner_changes_with_step_and_survivors():
    first = draw_frame(10, teams(1), step=1)
    later = draw_frame(10, teams(1), step=2)
    fewer = draw_frame(10, [teams(1)[0], Team("blue", np.array([[9, 9]]))], step=1)
    assert not np.array_equal(banner(first), banner(later))
    assert not np.array_equal(banner(first), banner(fewer))


def test_frame_rejects_cells_off_the_map_and_bad_shapes():
    with pytest.raises(ValueError, match="outside"):
        draw_frame(4, [Team("red", np.array([[4, 0]]))], step=0)
    with pytest.raises(ValueError, match="positions"):
        draw_frame(4, [Team("red", np.array([1, 0, 2]))], step=0)
    with pytest.raises(ValueError, match="attacks"):
        draw_frame(4, [], step=0, attacks=np.array([[0, 0, 1]]))
    with pytest.raises(ValueError, match="walls"):
        draw_frame(4, [], step=0, walls=np.array([[0, 9]]))


def test_gif_has_one_frame_per_step(tmp_path):
    frames = [draw_frame(10, teams(step), step=step, cell=3) for step in range(7)]
    path = tmp_path / "replay.gif"
    write_animation(path, frames, fps=5)
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == 7
        assert gif.size == frames[0].size
        assert [f.info["duration"] for f in ImageSequence.Iterator(gif)] == [200] * 7


def test_mp4_has_one_frame_per_step_and_the_frame_size(tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    frames = [draw_frame(10, teams(step), step=step, cell=8) for step in range(9)]
    path = tmp_path / "replay.mp4"
    write_animation(path, frames, fps=4)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    decoded = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3)
               for f in reader]
    assert tuple(meta["size"]) == frames[0].size and meta["fps"] == 4
    assert len(decoded) == 9
    # Lossy, but a team's colour survives: the agent at (0, 0) of the first frame is red.
    y = banner_height(2) + 4
    assert np.abs(decoded[0][y, 4].astype(int) - TEAM_COLOURS[0]).max() < 40


def test_unknown_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="format"):
        write_animation(tmp_path / "x.avi", [draw_frame(4, [], step=0)])


def test_mp4_without_imageio_ffmpeg_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes the import fail
    with pytest.raises(RuntimeError, match=r"cmfq\[video\]"):
        write_animation(tmp_path / "x.mp4", [draw_frame(4, [], step=0)])


def test_envs_give_health_walls_and_attacks():
    env = make_env("tiger-deer", 12, seed=0, n_tigers=3, n_deer=20, wall_density=0.05)
    env.reset(0)
    walls = env.walls()
    border = 4 * (12 - 1)
    assert walls.shape == (border + env.n_walls, 2)
    assert set(map(tuple, walls)).isdisjoint(map(tuple, env.positions("deer")))
    rng = np.random.default_rng(0)
    seen_attack = False
    for _ in range(15):
        env.step({g: rng.integers(0, env.specs[g].n_actions, env.num_alive(g))
                  for g in env.groups})
        for g in env.groups:
            health = env.health(g)
            assert health.shape == (env.num_alive(g),)
            assert ((health > 0) & (health <= 1)).all()
        attacks = env.attacks()
        assert attacks.shape[1] == 4 and ((attacks >= 0) & (attacks < 12)).all()
        live = set(map(tuple, np.concatenate([env.positions(g) for g in env.groups])))
        assert {tuple(a[:2]) for a in attacks} <= live
        # An attack reaches a neighbouring cell (tigers attack within radius 1).
        assert (np.abs(attacks[:, :2] - attacks[:, 2:]).max(initial=0)) <= 1
        seen_attack |= len(attacks) > 0
    assert seen_attack
    # Tigers lose health every step (their step recovery is negative).
    assert (env.health("tiger") < 1).all()


def test_walls_of_a_map_with_more_walls_than_magent2s_own_listing_holds():
    env = make_env("tiger-deer", 160, seed=0, n_tigers=2, n_deer=2, wall_density=0.45)
    env.reset(0)
    walls = env.walls()
    assert len(walls) == 4 * (160 - 1) + env.n_walls > 10_000
    assert len(set(map(tuple, walls))) == len(walls)
