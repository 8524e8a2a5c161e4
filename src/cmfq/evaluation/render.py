"""Replays: one game between checkpoints, drawn step by step and written as a GIF or MP4."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cmfq.envs import ENVS
from cmfq.evaluation.frames import Team, draw_frame
from cmfq.evaluation.match import Arena, Game
from cmfq.evaluation.players import labels_for
from cmfq.evaluation.video import FORMATS, write_animation
from cmfq.training.config import RunOptions


def render_game(
    paths: Sequence[str | Path], out: str | Path, *, env: str = "battle",
    map_size: int = RunOptions.map_size, seed: int = 0, fps: float = 10.0, cell: int = 12,
    env_options: dict | None = None,
):
    """Play one game and write one frame per step to ``out``: walls, agents with their health,
    and the step's attacks. Returns its ``GameResult``.

    ``paths[g]`` (a checkpoint, ``pretrained:NAME`` or ``random``) acts for the env's group
    ``g``: one player per side in battle, whose sides are alike; the tigers alone in tiger-deer,
    whose deer act at random."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"unsupported replay format {out.suffix!r}; use one of {FORMATS}")
    if env not in ENVS:
        raise ValueError(f"unknown env {env!r}; choose one of {sorted(ENVS)}")
    groups = ENVS[env].groups
    played = groups if ENVS[env].symmetric else groups[:1]
    if len(paths) != len(played):
        raise ValueError(
            f"{env} takes {len(played)} player{'s' * (len(played) > 1)} ({', '.join(played)}), "
            f"got {len(paths)}" + ("; name random for a random team" if len(played) > 1 else "")
        )
    if (env_options or {}).get("env_backend", "magent2") != "magent2":
        raise ValueError("a replay draws magent2's games (their walls and attacks); render with "
                         "env_backend magent2")
    arena = Arena(paths, env, map_size, **(env_options or {}))
    labels = labels_for(paths)
    names = [
        f"{group} ({labels[g] if g < len(paths) else 'random'})" for g, group in enumerate(groups)
    ]
    frames = []

    def draw(games, game: int) -> None:
        env_ = games.envs[game]  # the arena plays magent2's envs
        teams = [
            Team(name, env_.positions(g), env_.health(g))
            for name, g in zip(names, groups, strict=True)
        ]
        frames.append(draw_frame(
            env_.map_size, teams, env_.step_count, cell=cell, max_steps=env_.max_steps,
            walls=env_.walls(), attacks=env_.attacks(),
        ))

    [result] = arena.play([Game(tuple(range(len(paths))), 0, seed)], on_step=draw)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_animation(out, frames, fps=fps)
    return result
