"""Writing replay frames as an animated GIF (Pillow) or an MP4 (H.264 through ``imageio-ffmpeg``,
whose wheel bundles ffmpeg: ``pip install "cmfq[video]"``)."""

from __future__ import annotations

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
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RuntimeError(
            'writing MP4 needs imageio-ffmpeg (pip install "cmfq[video]"); or write a .gif'
        ) from None
    size = frames[0].size
    # yuv420p, what players expect, needs even sizes (draw_frame gives them; others are resized).
    writer = imageio_ffmpeg.write_frames(
        str(path), size, fps=fps, codec="libx264", macro_block_size=2, ffmpeg_log_level="error"
    )
    writer.send(None)
    try:
        for frame in frames:
            if frame.size != size:
                raise ValueError("all frames must have the same size")
            writer.send(np.asarray(frame.convert("RGB"), dtype=np.uint8))
    finally:
        writer.close()
