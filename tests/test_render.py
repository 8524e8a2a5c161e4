import numpy as np
import pytest
from PIL import Image, ImageSequence

from cmfq.evaluation.frames import TEAM_COLOURS, Team, draw_frame
from cmfq.evaluation.video import write_animation


def teams(step):
    return [Team("red", np.array([[0, 0], [step, 1]])), Team("blue", np.array([[9, 9], [8, 2]]))]


def pixel_of_cell(image, x, y, cell):
    width = image.size[0]
    banner = image.size[1] - width
    return image.getpixel((x * cell + cell // 2, banner + y * cell + cell // 2))


def test_frame_draws_agents_in_team_colours():
    cell = 4
    image = draw_frame(10, teams(3), step=3, cell=cell)
    assert image.mode == "RGB" and image.size[0] == 10 * cell and image.size[1] > 10 * cell
    assert pixel_of_cell(image, 0, 0, cell) == TEAM_COLOURS[0]
    assert pixel_of_cell(image, 3, 1, cell) == TEAM_COLOURS[0]
    assert pixel_of_cell(image, 9, 9, cell) == TEAM_COLOURS[1]
    assert pixel_of_cell(image, 5, 5, cell) not in TEAM_COLOURS[:2]


def test_frame_banner_changes_with_step_and_survivors():
    banner = lambda image: np.asarray(image)[: image.size[1] - image.size[0]]  # noqa: E731
    first = draw_frame(10, teams(1), step=1)
    later = draw_frame(10, teams(1), step=2)
    fewer = draw_frame(10, [teams(1)[0], Team("blue", np.array([[9, 9]]))], step=1)
    assert not np.array_equal(banner(first), banner(later))
    assert not np.array_equal(banner(first), banner(fewer))


def test_frame_rejects_agents_off_the_map_and_bad_shapes():
    with pytest.raises(ValueError, match="outside"):
        draw_frame(4, [Team("red", np.array([[4, 0]]))], step=0)
    with pytest.raises(ValueError, match="positions"):
        draw_frame(4, [Team("red", np.array([1, 0, 2]))], step=0)


def test_gif_has_one_frame_per_step(tmp_path):
    frames = [draw_frame(10, teams(step), step=step, cell=3) for step in range(7)]
    path = tmp_path / "replay.gif"
    write_animation(path, frames, fps=5)
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == 7
        assert gif.size == frames[0].size
        assert [f.info["duration"] for f in ImageSequence.Iterator(gif)] == [200] * 7


def test_unknown_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="format"):
        write_animation(tmp_path / "x.avi", [draw_frame(4, [], step=0)])


def test_mp4_without_ffmpeg_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr("cmfq.evaluation.video.shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match="ffmpeg"):
        write_animation(tmp_path / "x.mp4", [draw_frame(4, [], step=0)])
