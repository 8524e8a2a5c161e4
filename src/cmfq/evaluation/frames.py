"""A small frame drawer for replays: each team's live agents as squares in the team's colour on
the map, under a banner with the step and each team's survivors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (245, 245, 240)
BANNER = (255, 255, 255)
TEXT = (20, 20, 20)
# Red and blue for the two battle teams first; more colours for environments with more groups.
TEAM_COLOURS = ((214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189))
BANNER_HEIGHT = 18


@dataclass(frozen=True)
class Team:
    """A team's state at one step: ``positions`` [N, 2] as (x, y) cells, ``alive`` [N] bool."""

    name: str
    positions: np.ndarray
    alive: np.ndarray


def draw_frame(map_size: int, teams: Sequence[Team], step: int, cell: int = 6) -> Image.Image:
    """Draw one frame of ``map_size × map_size`` cells, ``cell`` pixels each, with a banner."""
    if map_size <= 0 or cell <= 0:
        raise ValueError(f"map_size and cell must be positive, got {map_size} and {cell}")
    if len(teams) > len(TEAM_COLOURS):
        raise ValueError(f"at most {len(TEAM_COLOURS)} teams can be drawn, got {len(teams)}")
    # Colour a cell-level grid, then blow each cell up to cell×cell pixels in one go.
    palette = np.array((BACKGROUND, *TEAM_COLOURS[: len(teams)]), dtype=np.uint8)
    grid = np.zeros((map_size, map_size), dtype=np.intp)
    for index, team in enumerate(teams):
        positions = np.asarray(team.positions, dtype=np.int64).reshape(-1, 2)
        alive = np.asarray(team.alive, dtype=bool).reshape(-1)
        if len(alive) != len(positions):
            raise ValueError(
                f"team {team.name!r}: {len(positions)} positions but {len(alive)} alive flags"
            )
        live = positions[alive]
        if live.size and (live.min() < 0 or live.max() >= map_size):
            raise ValueError(f"team {team.name!r} has a live agent outside the {map_size}² map")
        grid[live[:, 1], live[:, 0]] = index + 1
    pixels = palette[grid].repeat(cell, axis=0).repeat(cell, axis=1)

    width = map_size * cell
    image = Image.new("RGB", (width, width + BANNER_HEIGHT), BANNER)
    image.paste(Image.fromarray(pixels), (0, BANNER_HEIGHT))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    x = 4
    for text, colour in _banner(teams, step):
        draw.text((x, 3), text, fill=colour, font=font)
        x += int(draw.textlength(text, font=font)) + 10
    return image


def _banner(teams: Sequence[Team], step: int) -> list[tuple[str, tuple[int, int, int]]]:
    parts = [(f"step {step}", TEXT)]
    for team, colour in zip(teams, TEAM_COLOURS, strict=False):
        parts.append((f"{team.name}: {int(np.count_nonzero(team.alive))}", colour))
    return parts
