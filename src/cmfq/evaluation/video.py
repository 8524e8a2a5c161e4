"""Writing replay frames as an animated GIF (Pillow) or an MP4 (the ``ffmpeg`` program)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = (".gif", ".mp4")


def write_animation(path: Path, frames: Sequence[Image.Image], fps: float = 10.0) -> None:
    """Write ``frames`` to ``path``, as GIF or MP4 after its suffix."""
    path = Path(path)
    if not frames:
        raise ValueError("no frames to write")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        write_gif(path, frames, fps)
    elif suffix == ".mp4":
        write_mp4(path, frames, fps)
    else:
        raise ValueError(f"unsupported replay format {path.suffix!r}; use one of {FORMATS}")


def write_gif(path: Path, frames: Sequence[Image.Image], fps: float) -> None:
    # GIF stores durations in whole hundredths of a second, so a rate above 50 fps is not kept.
    frames[0].save(
        path, save_all=True, append_images=list(frames[1:]), duration=round(1000 / fps), loop=0,
    )


def write_mp4(path: Path, frames: Sequence[Image.Image], fps: float) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("writing MP4 needs the ffmpeg program on PATH; write a .gif instead")
    width, height = frames[0].size
    # H.264 in yuv420p (what players expect) needs even sizes: pad by one pixel where odd.
    command = [
        ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
        "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-pix_fmt", "yuv420p", "-vcodec", "libx264",
        str(path),
    ]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        for frame in frames:
            if frame.size != (width, height):
                raise ValueError("all frames must have the same size")
            process.stdin.write(np.asarray(frame.convert("RGB"), dtype=np.uint8).tobytes())
        _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {stderr.decode(errors='replace').strip()}")
