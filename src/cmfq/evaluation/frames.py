"""Replay frames: the map with walls, each team's live agents in its colour with a health bar,
the step's attacks as lines from attacker to target, under a banner that doubles as the legend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (245, 245, 240)
BANNER = (255, 255, 255)
TEXT = (20, 20, 20)
WALL = (120, 120, 120)
ATTACK = (20, 20, 20)
HEALTH = (40, 190, 60)
WOUND = (60, 60, 60)
# Red and blue for the two battle teams first; more colours for environments with more groups.
TEAM_COLOURS = ((214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189))
FONT_SIZE = 13
LINE_HEIGHT = FONT_SIZE + 4


class Team(NamedTuple):
    """A team at one step: its name, the (x, y) cells of its live agents (int [n, 2]) and, when
    known, their health as a fraction of the maximum (float [n])."""

    name: str
    positions: np.ndarray
    health: np.ndarray | None = None


def draw_frame(
    map_size: int, teams: Sequence[Team], step: int, cell: int = 12,
    max_steps: int | None = None, walls: np.ndarray | None = None,
    attacks: np.ndarray | None = None,
) -> Image.Image:
    """Draw one frame of ``map_size × map_size`` cells, ``cell`` pixels each.

    ``walls``: int [m, 2] wall cells. ``attacks``: int [m, 4] rows (x, y, target x, target y).
    The banner has the step, then one legend line per team (colour, name, live agents), then one
    for the marks (wall, health bar, attack) that this frame can show. Width and height are even,
    as H.264 wants.
    """
    if map_size <= 0 or cell <= 0:
        raise ValueError(f"map_size and cell must be positive, got {map_size} and {cell}")
    if len(teams) > len(TEAM_COLOURS):
        raise ValueError(f"at most {len(TEAM_COLOURS)} teams can be drawn, got {len(teams)}")
    font = ImageFont.load_default(size=FONT_SIZE)
    banner = banner_height(len(teams))
    swatch = LINE_HEIGHT - 6
    has_walls = walls is not None and len(walls) > 0
    # As wide as the map or the legend, whichever is wider; the legend's width must not depend
    # on the step, so that every frame of a replay has the same size.
    legend = max(
        [10 + swatch + font.getlength(f"{team.name}: 0000 alive") for team in teams]
        + [_marks_legend_width(swatch, font, has_walls)]
    )
    width = _even(max(map_size * cell, round(legend) + 4))
    image = Image.new("RGB", (width, _even(banner + map_size * cell)), BANNER)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, banner, map_size * cell - 1, banner + map_size * cell - 1), BACKGROUND)

    def box(x: int, y: int, inset: int = 0) -> tuple[int, int, int, int]:
        top = banner + y * cell
        return (x * cell + inset, top + inset, (x + 1) * cell - 1 - inset, top + cell - 1 - inset)

    def centre(x: int, y: int) -> tuple[float, float]:
        return (x + 0.5) * cell, banner + (y + 0.5) * cell

    for x, y in _cells(walls, 2, "walls", map_size):
        draw.rectangle(box(x, y), WALL)
    for team, colour in zip(teams, TEAM_COLOURS):
        positions = _cells(team.positions, 2, f"team {team.name!r}: positions", map_size)
        for (x, y), health in zip(positions, _health(team, len(positions))):
            draw.rectangle(box(x, y, inset=cell // 12), colour)
            if health is not None and cell >= 6:
                _health_bar(draw, box(x, y, inset=cell // 6), health)
    for x, y, tx, ty in _cells(attacks, 4, "attacks", map_size):
        draw.line((centre(x, y), centre(tx, ty)), ATTACK, width=max(1, cell // 8))
        draw.ellipse(box(tx, ty, inset=cell * 3 // 8), ATTACK)

    title = f"step {step}" if max_steps is None else f"step {step}/{max_steps}"
    draw.text((4, 3), title, TEXT, font=font)
    for row, (team, colour) in enumerate(zip(teams, TEAM_COLOURS), start=1):
        top = 3 + LINE_HEIGHT * row
        draw.rectangle((4, top + 2, 4 + swatch, top + 2 + swatch), colour)
        alive = len(np.asarray(team.positions).reshape(-1, 2))
        draw.text((10 + swatch, top), f"{team.name}: {alive} alive", TEXT, font=font)
    _marks_legend(draw, 3 + LINE_HEIGHT * (len(teams) + 1), swatch, font, has_walls)
    return image


def banner_height(n_teams: int) -> int:
    """Pixels above the map: the step, one legend line per team, and one for the marks."""
    return _even(LINE_HEIGHT * (n_teams + 2) + 6)


def _even(pixels: int) -> int:
    return pixels + pixels % 2


def _cells(rows: np.ndarray | None, columns: int, what: str, map_size: int) -> np.ndarray:
    """``rows`` as int [m, columns], checked to lie on the map (none: an empty array)."""
    if rows is None:
        return np.zeros((0, columns), dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return rows.reshape(0, columns)
    if rows.ndim != 2 or rows.shape[1] != columns:
        raise ValueError(f"{what} must be [n, {columns}], got {rows.shape}")
    if rows.min() < 0 or rows.max() >= map_size:
        raise ValueError(f"{what}: a cell lies outside the {map_size}² map")
    return rows


def _health(team: Team, n: int) -> Sequence[float | None]:
    if team.health is None:
        return [None] * n
    health = np.asarray(team.health, dtype=np.float64).reshape(-1)
    if len(health) != n:
        raise ValueError(f"team {team.name!r}: {len(health)} health values for {n} agents")
    return np.clip(health, 0.0, 1.0).tolist()


def _health_bar(draw: ImageDraw.ImageDraw, inner: tuple[int, int, int, int], health: float) -> None:
    """A bar along the bottom of the agent's square: green for the health left, dark for lost."""
    left, _, right, bottom = inner
    height = max(1, (bottom - inner[1]) // 3)
    top = bottom - height + 1
    draw.rectangle((left, top, right, bottom), WOUND)
    filled = left + round(health * (right - left + 1)) - 1
    if filled >= left:
        draw.rectangle((left, top, filled, bottom), HEALTH)


def _marks_legend(
    draw: ImageDraw.ImageDraw, top: int, swatch: int, font: ImageFont.ImageFont, walls: bool
) -> None:
    """One legend line for the marks: wall (if the map has walls), health bar, attack."""
    symbols = {
        "wall": lambda box: draw.rectangle(box, WALL),
        "health": lambda box: _health_bar(draw, box, 2 / 3),
        "attack": lambda box: draw.line((box[0], box[3], box[2], box[1]), ATTACK, width=2),
    }
    x = 4
    for label in _marks(walls):
        symbols[label]((x, top + 2, x + swatch, top + 2 + swatch))
        draw.text((x + swatch + 6, top), label, TEXT, font=font)
        x += _mark_width(label, swatch, font)


def _marks(walls: bool) -> tuple[str, ...]:
    return ("wall", "health", "attack") if walls else ("health", "attack")


def _mark_width(label: str, swatch: int, font: ImageFont.FreeTypeFont) -> int:
    return swatch + 18 + round(font.getlength(label))


def _marks_legend_width(swatch: int, font: ImageFont.FreeTypeFont, walls: bool) -> int:
    return 4 + sum(_mark_width(label, swatch, font) for label in _marks(walls))
