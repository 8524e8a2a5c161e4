"""A small frame drawer for replays: each team's live agents as squares in the team's colour on
the map, under a banner with the step and each team's survivors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (245, 245, 240)
BANNER = (255, 255, 255)
TEXT = (20, 20, 20)
# Red and blue for the two battle teams first; more colours for environments with more groups.
TEAM_COLOURS = ((214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189))
LINE_HEIGHT = 13


class Team(NamedTuple):
    """A team at one step: its name and the (x, y) cells of its live agents, int [n, 2]."""

    name: str
    positions: np.ndarray


def draw_frame(
    map_size: int, teams: Sequence[Team], step: int, cell: int = 6, max_steps: int | None = None,
) -> Image.Image:
    """Draw one frame of ``map_size × map_size`` cells, ``cell`` pixels each, under a banner
    with one line for the step and one per team (its name and live agents)."""
    if map_size <= 0 or cell <= 0:
        raise ValueError(f"map_size and cell must be positive, got {map_size} and {cell}")
    if len(teams) > len(TEAM_COLOURS):
        raise ValueError(f"at most {len(TEAM_COLOURS)} teams can be drawn, got {len(teams)}")
    # Colour a cell-level grid, then blow each cell up to cell×cell pixels in one go.
    palette = np.array((BACKGROUND, *TEAM_COLOURS[: len(teams)]), dtype=np.uint8)
    grid = np.zeros((map_size, map_size), dtype=np.intp)
    for index, team in enumerate(teams):
        positions = np.asarray(team.positions, dtype=np.int64)
        if positions.size == 0:
            continue
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise ValueError(f"team {team.name!r}: positions must be [n, 2], got {positions.shape}")
        if positions.min() < 0 or positions.max() >= map_size:
            raise ValueError(f"team {team.name!r} has an agent outside the {map_size}² map")
        grid[positions[:, 1], positions[:, 0]] = index + 1
    pixels = palette[grid].repeat(cell, axis=0).repeat(cell, axis=1)

    lines = [(f"step {step}" if max_steps is None else f"step {step}/{max_steps}", TEXT)]
    lines += [
        (f"{team.name}: {len(np.asarray(team.positions).reshape(-1, 2))} alive", colour)
        for team, colour in zip(teams, TEAM_COLOURS, strict=False)
    ]
    banner = LINE_HEIGHT * len(lines) + 4
    width = map_size * cell
    image = Image.new("RGB", (width, width + banner), BANNER)
    image.paste(Image.fromarray(pixels), (0, banner))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for row, (text, colour) in enumerate(lines):
        draw.text((3, 2 + LINE_HEIGHT * row), text, fill=colour, font=font)
    return image
