"""The games a battle tournament may take from the report already in its folder.

A game is fully determined by the protocol's game settings (env, map size, seed, env options,
the layout among them), the checkpoint on each side and the index of its mirrored pair of games,
``k // 2``, which gives its seed (``tournament.schedule``), and with the ``shifted`` layout its
starting positions (``play_batches`` plays a game alike alone or among others). It does not
depend on the other players, on their order or labels, on the games per pair nor on which pairs
play. So the games an earlier report holds between the same checkpoint files under the same
game settings are exactly the games a new tournament would play, and only the others need
playing: a study that adds players, or games per pair, pays for the new games only.

Checkpoints are matched by path, and each file must still have the SHA-256 that the report
recorded (``players.digest``): the games of a checkpoint written again under its name are played
again, as are all games of a report that recorded no digests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from cmfq.evaluation.match import Game
from cmfq.evaluation.report import GameRecord, read_report

NOT_GAME_SETTINGS = ("checkpoints", "sha256", "games_per_pair", "pairs", "group_by", "bootstrap")
"""Protocol entries that change no game (``bootstrap``: in reports written before the groups' t-
intervals); every other entry must match for games to be reused, battle's ``layout`` among them."""

Key = tuple[str, str, int]
"""A game as played: (the path of the first side's checkpoint, the second's, ``k // 2``)."""


def _path(reference) -> str:
    # ./runs/a/last.pt and runs/a/last.pt name one file.
    return os.path.normpath(str(reference))


def game_key(game: Game, paths: Sequence) -> Key:
    first, second = game.players
    return _path(paths[first]), _path(paths[second]), game.index // 2


def earlier_games(report: Path, protocol: Mapping) -> dict[Key, tuple[str, GameRecord]]:
    """The games of ``report`` (an earlier report.json; none if it does not exist) that a
    tournament of ``protocol`` (its report's protocol, with the checkpoints' ``sha256``) may
    reuse, each with the path of its record's ``a``. Where a whole report or some of its
    checkpoints cannot be reused, a line on stdout says why."""
    if not report.is_file():
        return {}
    try:
        earlier = read_report(report)
        old, games = earlier["protocol"], earlier["games"]
    except (ValueError, KeyError) as err:
        print(f"{report} cannot be read ({err!r}): playing every game")
        return {}
    changed = [f"{key} {old.get(key)!r}, now {protocol.get(key)!r}"
               for key in sorted((set(old) | set(protocol)) - set(NOT_GAME_SETTINGS))
               if old.get(key) != protocol.get(key)]
    if changed:
        print(f"{report} was played under another protocol ({'; '.join(changed)}): "
              "playing every game")
        return {}
    if "sha256" not in old:
        print(f"{report} records no checkpoint digests (an older report): playing every game")
        return {}
    then = {_path(path): old["sha256"][label] for label, path in old["checkpoints"].items()}
    now = {_path(path): protocol["sha256"][label]
           for label, path in protocol["checkpoints"].items()}
    rewritten = [path for path in now if path in then and then[path] != now[path]]
    if rewritten:
        print(f"changed since {report}, so their games are played again: {', '.join(rewritten)}")
    same = {path for path in now if path in then and then[path] == now[path]}
    path_of = {label: _path(path) for label, path in old["checkpoints"].items()}
    reusable = {}
    for game in games:
        record = GameRecord(**game)
        a, b = path_of[record.a], path_of[record.b]
        if a in same and b in same:
            sides = (a, b) if record.a_side == 0 else (b, a)
            reusable[(*sides, record.game // 2)] = (a, record)
    return reusable


def as_played_now(
    game: Game, earlier: tuple[str, GameRecord], paths: Sequence, labels: Sequence[str],
) -> GameRecord:
    """The earlier record of ``game`` (an entry of ``earlier_games``) as the new tournament
    records it: from its pair's lower checkpoint index now (which may have been ``b`` then), with
    today's labels and game number."""
    a_path, record = earlier
    first, second = sorted(game.players)
    if _path(paths[first]) != a_path:
        record = record.flipped()
    return replace(record, a=labels[first], b=labels[second], game=game.index)
