"""Tournaments, tiger-deer evaluation, replays and the CLI, on tiny untrained checkpoints written
through the training package's own ``save_checkpoint``."""

import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from cmfq.algos import make_algorithm
from cmfq.cli import main
from cmfq.envs import make_env
from cmfq.evaluation.frames import banner_height
from cmfq.evaluation.games import play_batches
from cmfq.evaluation.match import Arena, ArenaSpec, Game
from cmfq.evaluation.render import render_game
from cmfq.evaluation.tiger_deer import ALGORITHM_FILES as TIGER_ALGORITHM_FILES
from cmfq.evaluation.tiger_deer import run_tiger_deer
from cmfq.evaluation.tournament import (
    ALGORITHM_FILES,
    REPORT_FILES,
    Settings,
    pairs_to_play,
    run_tournament,
    schedule,
)
from cmfq.training.checkpoint import save_checkpoint
from cmfq.training.config import TrainConfig

MAP = 12  # the smallest battle map: 5 agents a side
STEPS = 20


def make_checkpoint(path, algo, env_name, seed):
    env = make_env(env_name, MAP, seed=0)
    config = TrainConfig(algo=algo, env=env_name, map_size=MAP, seed=seed)
    torch.manual_seed(seed)
    learner = make_algorithm(algo, env.specs[env.groups[0]], **config.algo_options())
    save_checkpoint(path, learner, config, group=env.groups[0], round_index=0)
    return str(path)


@pytest.fixture(scope="module")
def battle_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [make_checkpoint(root / f"{algo}-battle" / "last.pt", algo, "battle", seed)
            for algo, seed in (("mfq", 1), ("cmfq", 2))]


@pytest.fixture(scope="module")
def tiger_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [make_checkpoint(root / f"{algo}-td" / "last.pt", algo, "tiger-deer", seed)
            for algo, seed in (("il", 3), ("cmfq", 4))]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_csv_holds(path, entries):
    """The CSV at ``path`` has one row per JSON entry, in order, with its values; an estimate
    ``{value, low, high}`` is the three columns ``name``, ``name_low``, ``name_high`` (an unknown
    bound: null in the JSON, nan in the CSV)."""
    rows = read_csv(path)
    assert len(rows) == len(entries) > 0
    for row, entry in zip(rows, entries, strict=True):
        for key, value in entry.items():
            if isinstance(value, dict):
                cells = [row[key], row[f"{key}_low"], row[f"{key}_high"]]
                assert [float(c) for c in cells] == pytest.approx(
                    [np.nan if value[k] is None else value[k] for k in ("value", "low", "high")],
                    nan_ok=True), key
            elif isinstance(value, str):
                assert row[key] == value, key
            else:
                assert float(row[key]) == pytest.approx(value), key


def test_schedule_swaps_sides_and_mirrors_seeds():
    pairs = pairs_to_play("all", ["a", "b", "c"])
    games = schedule(pairs, games=4, seed=7)
    assert len(games) == 3 * 4
    for first, second in zip(games[::2], games[1::2], strict=True):
        assert second.players == first.players[::-1]
        assert second.seed == first.seed
    assert {g.players for g in games} == {(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)}
    assert schedule(pairs, 4, seed=7) == games
    assert [g.seed for g in schedule(pairs, 4, seed=8)] != [g.seed for g in games]
    with pytest.raises(ValueError, match="at least two checkpoints"):
        pairs_to_play("all", ["a"])
    for odd in (1, 3):  # a seed played from one side only
        with pytest.raises(ValueError, match="must be even"):
            schedule(pairs, odd, seed=7)


def test_tournament_reports_are_complete_and_consistent(battle_checkpoints, tmp_path):
    games = 4
    settings = Settings(map_size=MAP, games=games, seed=3, env_options={"max_steps": STEPS})
    run_tournament(battle_checkpoints, settings, tmp_path, workers=1)
    for name in REPORT_FILES:
        assert (tmp_path / name).stat().st_size > 0, name

    report = json.loads((tmp_path / "report.json").read_text())
    (pair,) = report["pairs"]
    assert (pair["a"], pair["b"]) == ("mfq-battle", "cmfq-battle")
    assert pair["wins"] + pair["losses"] + pair["ties"] == pair["games"] == games
    assert pair["win_rate"]["value"] == pytest.approx(pair["wins"] / games)

    rows = read_csv(tmp_path / "games.csv")
    assert len(rows) == games
    assert sorted(int(r["a_side"]) for r in rows) == [0, 0, 1, 1]
    outcomes = [np.sign(int(r["a_survivors"]) - int(r["b_survivors"])) for r in rows]
    assert (outcomes.count(1), outcomes.count(-1), outcomes.count(0)) == (
        pair["wins"], pair["losses"], pair["ties"]
    )
    # Survivors plus the opponent's kills give the team's starting size back.
    for r in rows:
        assert int(r["a_survivors"]) + int(r["b_kills"]) == 5
        assert int(r["b_survivors"]) + int(r["a_kills"]) == 5
        assert 1 <= int(r["steps"]) <= STEPS
    assert float(pair["a_kills"]["value"]) == pytest.approx(
        np.mean([int(r["a_kills"]) for r in rows]))

    (csv_pair,) = read_csv(tmp_path / "pairs.csv")
    assert [int(csv_pair[k]) for k in ("wins", "losses", "ties")] == [
        pair["wins"], pair["losses"], pair["ties"]]
    standings = {s["model"]: s for s in report["standings"]}
    assert standings["mfq-battle"]["wins"] == standings["cmfq-battle"]["losses"] == pair["wins"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| mfq-battle | cmfq-battle | 4 |" in markdown
    assert Image.open(tmp_path / "win_rate.png").format == "PNG"


def test_same_side_and_seed_replays_identically(battle_checkpoints):
    arena = Arena(battle_checkpoints, "battle", MAP, max_steps=STEPS)

    def trace(players, seed):
        steps = []
        [result] = arena.play([Game(players, 0, seed)], on_step=lambda games, j: steps.append(
            [games.envs[j].positions(g).copy() for g in games.groups]))
        return result, steps

    first, first_steps = trace((0, 1), seed=11)
    again, again_steps = trace((0, 1), seed=11)
    assert first == again
    assert all(np.array_equal(a, b) for s, t in zip(first_steps, again_steps, strict=True)
               for a, b in zip(s, t, strict=True))
    _, other_steps = trace((0, 1), seed=12)
    assert any(not np.array_equal(a, b) for s, t in zip(first_steps, other_steps, strict=False)
               for a, b in zip(s, t, strict=True))


def test_results_do_not_depend_on_the_number_of_workers(battle_checkpoints):
    spec = ArenaSpec(tuple(battle_checkpoints), "battle", MAP, {"max_steps": 10})
    games = [Game((0, 1), 0, 5), Game((1, 0), 1, 5), Game((0, 1), 2, 6)]
    alone = play_batches(spec, games, workers=1, at_once=1)
    assert play_batches(spec, games, workers=2, at_once=2) == alone


def test_many_games_at_once_play_as_each_alone(battle_checkpoints):
    # Both checkpoints on both sides and against themselves, a random team, one seed twice; the
    # policies sample (eval_temperature 0.1), so a mix-up of their generators would show.
    players = [*battle_checkpoints, "random"]
    arena = Arena(players, "battle", MAP, max_steps=30)
    games = [Game(pair, k, seed) for k, (pair, seed) in enumerate(
        [((0, 1), 3), ((1, 0), 3), ((0, 2), 4), ((2, 1), 5), ((1, 1), 6), ((0, 1), 7)])]
    together = arena.play(games)
    alone = [Arena(players, "battle", MAP, max_steps=30).play([game])[0] for game in games]
    assert together == alone
    assert len({repr(r) for r in together}) == len(games)  # the games differ: a real check


def test_models_play_unchanged_on_a_larger_map(battle_checkpoints):
    # Trained with 5 agents a side on 12x12; 20x20 holds 16 a side.
    [result] = Arena(battle_checkpoints, "battle", 20, max_steps=5).play([Game((0, 1), 0, 0)])
    assert result.groups["red"].initial == result.groups["blue"].initial == 16


def test_checkpoint_from_another_env_is_refused(battle_checkpoints, tiger_checkpoints, tmp_path):
    with pytest.raises(ValueError, match="tiger-deer"):
        run_tournament([battle_checkpoints[0], tiger_checkpoints[0]], Settings(map_size=MAP),
                       tmp_path)
    with pytest.raises(ValueError, match="twice"):
        run_tournament([battle_checkpoints[0]] * 2, Settings(map_size=MAP), tmp_path)


def test_tiger_deer_report(tiger_checkpoints, tmp_path):
    report = run_tiger_deer(tiger_checkpoints, map_size=MAP, games=2, seed=0, out=tmp_path,
                            env_options={"max_steps": STEPS})
    for name in ("report.json", "models.csv", "games.csv", "report.md", "scores.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    n_deer = make_env("tiger-deer", MAP, seed=0).n_deer
    records = report["games"]
    assert len(records) == 4
    for record in records:
        assert record.deer_caught + record.deer_left == n_deer
    # Both models meet the same layouts.
    assert [r.seed for r in records[:2]] == [r.seed for r in records[2:]]
    for summary in report["models"]:
        mine = [r.deer_caught for r in records if r.model == summary.model]
        assert summary.games == 2
        assert summary.deer_caught.value == pytest.approx(np.mean(mine))
    # One checkpoint per algorithm: each group's mean is its checkpoint's.
    assert report["algorithms"]["members"] == {"il": ["il-td"], "cmfq": ["cmfq-td"]}
    for group, model in zip(report["algorithms"]["summaries"], report["models"], strict=True):
        assert (group.checkpoints, group.games) == (1, 2)
        assert group.deer_caught.value == pytest.approx(model.deer_caught.value)
        assert np.isnan(group.reward.low)  # one seed: none to vary
    for name in TIGER_ALGORITHM_FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "report.json").read_text())
    assert_csv_holds(tmp_path / "algorithms.csv", saved["algorithms"]["summaries"])
    assert_csv_holds(tmp_path / "models.csv", saved["models"])
    assert "## Per algorithm" in (tmp_path / "report.md").read_text()


def test_render_writes_one_frame_per_step(battle_checkpoints, tmp_path):
    path = tmp_path / "battle.gif"
    result = render_game(battle_checkpoints, path, map_size=MAP, seed=1,
                          env_options={"max_steps": 8}, cell=4)
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == result.steps == 8
        assert gif.size[1] == banner_height(2) + MAP * 4  # the map drawn at cell=4 pixels
    with pytest.raises(ValueError, match="format"):
        render_game(battle_checkpoints, tmp_path / "x.avi", map_size=MAP)


def test_cli_tournament_render_and_plot(battle_checkpoints, tmp_path, capsys):
    out = tmp_path / "t"
    code = main(["tournament", *battle_checkpoints, "--map-size", str(MAP), "--games", "2",
                 "--max-steps", "5", "--workers", "1", "--out", str(out)])
    assert code == 0
    assert all((out / name).is_file() for name in REPORT_FILES)
    assert main(["render", *battle_checkpoints, "--map-size", str(MAP), "--max-steps", "3",
                 "--out", str(tmp_path / "r.gif")]) == 0
    assert Image.open(tmp_path / "r.gif").n_frames == 3

    assert main(["tournament", battle_checkpoints[0], str(tmp_path / "missing.pt"),
                 "--out", str(out)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    # A player that does not fit, or an odd --games: one error line, and nothing said before.
    capsys.readouterr()
    for bad in (["--env", "battle", "--map-size", "8"], ["--games", "3"]):
        assert main(["tournament", *battle_checkpoints, *bad, "--out",
                     str(tmp_path / "new")]) == 2
        shown = capsys.readouterr()
        assert shown.out == "" and len(shown.err.splitlines()) == 1, bad
    # One battle player: battle takes one a side (random says so).
    assert main(["render", battle_checkpoints[0], "--map-size", str(MAP), "--out",
                 str(tmp_path / "one.gif")]) == 2
    assert "battle takes 2 players (red, blue), got 1" in capsys.readouterr().err

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('algo = "cmfq"\n')
    (run / "metrics.csv").write_text("round,reward,kills,win\n0,1,2,0\n1,2,3,1\n")
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0
    assert main(["plot", str(run), "--metrics", "elo", "--out", str(tmp_path / "d.png")]) == 2


def test_random_team_and_pretrained_names_play_in_tournaments_and_replays(
    battle_checkpoints, tmp_path, monkeypatch, capsys
):
    from cmfq import pretrained
    from cmfq.evaluation.players import labels_for

    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(battle_checkpoints[1], models / "cmfq-battle.pt")
    monkeypatch.setattr(pretrained, "MODELS_DIR", models)
    players = [battle_checkpoints[0], "pretrained:cmfq-battle", "random"]
    assert labels_for(players) == ["mfq-battle", "pretrained:cmfq-battle", "random"]

    out = tmp_path / "t"
    # --rounds, the old name of --games, still works.
    assert main(["tournament", *players, "--map-size", str(MAP), "--rounds", "2",
                 "--max-steps", "5", "--workers", "1", "--out", str(out)]) == 0
    assert "--rounds is deprecated; use --games" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["games_per_pair"] == 2
    assert {s["model"] for s in report["standings"]} == set(labels_for(players))
    assert report["protocol"]["checkpoints"]["random"] == "random"
    # The random team is its own group; the pretrained model is grouped by its config's algo.
    assert report["algorithms"]["members"] == {
        "mfq": ["mfq-battle"], "cmfq": ["pretrained:cmfq-battle"], "random": ["random"]}
    for name in ALGORITHM_FILES:
        assert (out / name).stat().st_size > 0, name
    assert_csv_holds(out / "algorithms.csv", report["algorithms"]["standings"])
    assert_csv_holds(out / "algorithm_pairs.csv",
                     report["algorithms"]["pairs"] + report["algorithms"]["against_random"])
    # Random is reported apart, not in the field.
    assert [(p["a"], p["b"]) for p in report["algorithms"]["against_random"]] == [
        ("mfq", "random"), ("cmfq", "random")]
    assert {s["algorithm"] for s in report["algorithms"]["standings"]} == {"mfq", "cmfq"}
    assert "## Per algorithm (checkpoints grouped by algo)" in (out / "report.md").read_text()

    assert main(["render", "random", "pretrained:cmfq-battle", "--map-size", str(MAP),
                 "--max-steps", "3", "--out", str(tmp_path / "r.gif")]) == 0
    assert Image.open(tmp_path / "r.gif").n_frames == 3
    assert main(["render", "pretrained:dqn-battle", "random", "--out",
                 str(tmp_path / "x.gif")]) == 2
    assert "available: cmfq-battle" in capsys.readouterr().err


def test_random_teams_play_seeded_games_in_both_envs():
    battle = Arena(["random", "random"], "battle", MAP, max_steps=STEPS)
    [first] = battle.play([Game((0, 1), 0, 2)])
    assert first.steps == STEPS or min(g.survivors for g in first.groups.values()) == 0
    assert battle.play([Game((0, 1), 0, 2)]) == [first]
    hunt = Arena(["random"], "tiger-deer", MAP, max_steps=STEPS)
    assert hunt.play([Game((0,), 0, 1)]) == hunt.play([Game((0,), 0, 1)])


def test_tournament_groups_by_config_fields(battle_checkpoints, tmp_path):
    from cmfq.evaluation.players import checkpoint_groups

    labels = ["a", "b"]
    assert checkpoint_groups(battle_checkpoints, labels) == {"a": "mfq", "b": "cmfq"}
    assert checkpoint_groups(battle_checkpoints, labels, "algo,seed") == {
        "a": "mfq-1", "b": "cmfq-2"}
    with pytest.raises(ValueError, match="group_by: no config fields"):
        checkpoint_groups(battle_checkpoints, labels, "optimizer")


def test_a_tournament_between_groups_plays_no_pair_of_one_group(battle_checkpoints, tmp_path):
    root = tmp_path / "runs"
    second_mfq = make_checkpoint(root / "mfq-seed3" / "last.pt", "mfq", "battle", 3)
    players = [*battle_checkpoints, second_mfq]
    out = tmp_path / "t"
    assert main(["tournament", *players, "--map-size", str(MAP), "--games", "2",
                 "--max-steps", "5", "--workers", "1", "--pairs", "between-groups",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["pairs"] == "between-groups"
    played = {frozenset((p["a"], p["b"])) for p in report["pairs"]}
    mfq = report["algorithms"]["members"]["mfq"]
    assert len(mfq) == 2 and frozenset(mfq) not in played
    assert len(played) == 2  # each mfq run against the cmfq run


@pytest.fixture
def tournament(monkeypatch):
    """``run_tournament``, returning the number of games it played."""
    played = []

    def spy(spec, games, **kwargs):
        played.append(len(games))
        return play_batches(spec, games, **kwargs)

    monkeypatch.setattr("cmfq.evaluation.tournament.play_batches", spy)

    def run(*args, **kwargs) -> int:
        played.clear()
        run_tournament(*args, **kwargs)
        return sum(played)

    return run


def same_reports(first, second):
    for name in ("report.json", "games.csv", "pairs.csv", "report.md", "algorithms.csv",
                 "algorithm_pairs.csv"):
        assert (first / name).read_text() == (second / name).read_text(), name


def test_a_tournament_extended_plays_only_the_new_games(battle_checkpoints, tmp_path, tournament,
                                                       capsys):
    mfq, cmfq = battle_checkpoints
    # Another mfq run in a folder of the same name: every label becomes the whole path.
    other = make_checkpoint(tmp_path / "elsewhere" / "mfq-battle" / "last.pt", "mfq", "battle", 3)
    settings = Settings(map_size=MAP, games=4, seed=4, env_options={"max_steps": 8})
    out = tmp_path / "t"
    assert tournament([mfq, cmfq], settings, out) == 4
    assert capsys.readouterr().out.splitlines()[0] == "4 games to play"
    # cmfq now comes first, so the pair (mfq, cmfq) is seen from cmfq (its mirrored games swap
    # numbers), and the new run sits in the middle: only its games are played.
    players = [cmfq, other, mfq]
    assert tournament(players, settings, out) == 2 * 4
    assert f"4 games reused from {out / 'report.json'}, 8 games to play" in capsys.readouterr().out
    run_tournament(players, settings, tmp_path / "fresh", reuse=False)
    same_reports(out, tmp_path / "fresh")
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["checkpoints"] == dict(zip(
        [str(p).removesuffix(".pt") for p in players], players, strict=True))
    assert len(report["algorithms"]["members"]["mfq"]) == 2
    # Again: nothing to play. Dropping a player drops its games, and its group's files.
    assert tournament(players, settings, out) == 0
    assert tournament([other, mfq], settings, out) == 0
    report = json.loads((out / "report.json").read_text())
    assert [(p["a"], p["b"], p["games"]) for p in report["pairs"]] == [
        (str(other).removesuffix(".pt"), str(mfq).removesuffix(".pt"), 4)]
    assert not (out / "algorithms.csv").exists()


def test_a_changed_checkpoint_or_protocol_plays_its_games_again(battle_checkpoints, tmp_path,
                                                               tournament, capsys):
    mine = tmp_path / "runs" / "mine" / "last.pt"
    mine.parent.mkdir(parents=True)
    shutil.copyfile(battle_checkpoints[0], mine)
    players = [str(mine), battle_checkpoints[1], "random"]
    settings = Settings(map_size=MAP, games=2, seed=5, env_options={"max_steps": 8})
    out = tmp_path / "t"
    assert tournament(players, settings, out) == 6
    # The same file written again: a new network under the old name.
    make_checkpoint(mine, "mfq", "battle", seed=7)
    assert tournament(players, settings, out) == 4  # its games against the two others
    assert f"played again: {mine}" in capsys.readouterr().out
    run_tournament(players, settings, tmp_path / "fresh", reuse=False)
    same_reports(out, tmp_path / "fresh")
    # More games per pair: only the new ones. Fewer, and another choice of pairs: none.
    assert tournament(players, replace(settings, games=4), out) == 6
    assert tournament(players, replace(settings, pairs="between-groups"), out) == 0
    # Another game setting, or --fresh: every game.
    capsys.readouterr()
    nine = replace(settings, env_options={"max_steps": 9})
    assert tournament(players, nine, out) == 6
    assert "max_steps 8, now 9" in capsys.readouterr().out
    assert main(["tournament", *players, "--map-size", str(MAP), "--games", "2", "--seed", "5",
                 "--max-steps", "9", "--workers", "1", "--out", str(out), "--fresh"]) == 0
    shown = capsys.readouterr().out
    assert "6 games to play" in shown and "reused" not in shown
    # A report that recorded no digests, or cannot be read, gives no game.
    report = json.loads((out / "report.json").read_text())
    del report["protocol"]["sha256"]
    (out / "report.json").write_text(json.dumps(report))
    assert tournament(players, nine, out) == 6
    assert "records no checkpoint digests" in capsys.readouterr().out
    (out / "report.json").write_text("{")
    assert tournament(players, nine, out) == 6
    assert "cannot be read" in capsys.readouterr().out


def test_a_seed_matched_tournament_on_shifted_layouts(battle_checkpoints, tmp_path, tournament,
                                                      capsys):
    root = tmp_path / "runs"
    runs = {f"{algo}-s{seed}": make_checkpoint(root / f"{algo}-s{seed}" / "last.pt", algo,
                                               "battle", seed)
            for algo in ("mfq", "cmfq") for seed in (1, 2)}
    players = [*runs.values(), "random"]
    out = tmp_path / "t"
    assert main(["tournament", *players, "--map-size", str(MAP), "--games", "2",
                 "--max-steps", "5", "--workers", "1", "--pairs", "seed-matched",
                 "--layout", "shifted", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["layout"] == "shifted"
    played = {frozenset((p["a"], p["b"])) for p in report["pairs"]}
    assert played == {frozenset(("mfq-s1", "cmfq-s1")), frozenset(("mfq-s2", "cmfq-s2"))} | {
        frozenset((run, "random")) for run in runs}
    algorithms = report["algorithms"]
    assert algorithms["seeds"] == {run: int(run[-1]) for run in runs}
    assert [(p["a"], p["b"]) for p in algorithms["pairs"]] == [("mfq", "cmfq")]
    assert [(p["a"], p["b"]) for p in algorithms["against_random"]] == [
        ("mfq", "random"), ("cmfq", "random")]
    assert {s["algorithm"] for s in algorithms["standings"]} == {"mfq", "cmfq"}
    assert "Seed-matched pairs" in (out / "report.md").read_text()
    assert len(read_csv(out / "algorithm_pairs.csv")) == 3
    # A mirrored pair's games start from one layout, another pair's from its own: the games
    # differ from those of the published layout, which are played anew, not reused.
    capsys.readouterr()
    settings = Settings(map_size=MAP, games=2, seed=0, pairs="seed-matched",
                        env_options={"max_steps": 5})
    assert tournament(players, settings, out) == 6 * 2
    assert "layout 'shifted', now None" in capsys.readouterr().out
    shifted = Arena(["random", "random"], "battle", MAP, max_steps=1, layout="shifted")
    starts = []
    shifted.play([Game((0, 1), 0, seed) for seed in range(8)],
                 on_step=lambda games, j: starts.append(games.envs[j].positions("red").tolist()))
    assert len({str(s) for s in starts}) > 1
    # Seeds that do not match up are refused, naming them.
    assert main(["tournament", *players[:3], "--map-size", str(MAP), "--games", "2",
                 "--pairs", "seed-matched", "--workers", "1", "--out", str(out)]) == 2
    assert "mfq has seed(s) [2] that cmfq lacks" in capsys.readouterr().err
