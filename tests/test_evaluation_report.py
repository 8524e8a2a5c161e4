import csv
import json
import math

import pytest

from cmfq.evaluation.report import (
    GameRecord,
    markdown_report,
    read_report,
    standings,
    summarise_pairs,
    tie_matrix,
    win_rate_matrix,
    write_csv,
    write_json,
)


def record(a, b, index, a_survivors, b_survivors, a_kills=0, b_kills=0, a_reward=0.0,
           b_reward=0.0):
    return GameRecord(a, b, index, seed=index, a_side=index % 2, a_survivors=a_survivors,
                       b_survivors=b_survivors, a_kills=a_kills, b_kills=b_kills,
                       a_reward=a_reward, b_reward=b_reward, steps=10)


@pytest.fixture
def records():
    # x vs y: 3 wins, 1 loss, 1 tie; x vs z: 0 wins, 2 losses; y vs z: 1 win, 1 tie.
    return [
        record("x", "y", 0, 5, 2, a_kills=8, b_kills=5, a_reward=3.0, b_reward=1.0),
        record("x", "y", 1, 4, 0, a_kills=10, b_kills=6, a_reward=5.0, b_reward=-1.0),
        record("x", "y", 2, 1, 3, a_kills=7, b_kills=9, a_reward=0.0, b_reward=2.0),
        record("x", "y", 3, 2, 2, a_kills=8, b_kills=8, a_reward=1.0, b_reward=1.0),
        record("x", "y", 4, 6, 5, a_kills=4, b_kills=4, a_reward=1.0, b_reward=2.0),
        record("x", "z", 0, 0, 3), record("x", "z", 1, 1, 4),
        record("y", "z", 0, 2, 1), record("y", "z", 1, 0, 0),
    ]


def test_game_outcome_follows_survivors():
    assert record("a", "b", 0, 3, 2).outcome == "win"
    assert record("a", "b", 0, 2, 3).outcome == "loss"
    assert record("a", "b", 0, 0, 0).outcome == "tie"


def test_pair_summary_counts_and_means(records):
    pairs = {(p.a, p.b): p for p in summarise_pairs(records)}
    xy = pairs["x", "y"]
    assert (xy.games, xy.wins, xy.losses, xy.ties) == (5, 3, 1, 1)
    assert xy.win_rate.value == pytest.approx(0.6)
    assert xy.win_rate.low < 0.6 < xy.win_rate.high
    assert xy.a_kills.value == pytest.approx(37 / 5)
    assert xy.b_kills.value == pytest.approx(32 / 5)
    assert xy.a_reward.value == pytest.approx(2.0)
    assert xy.b_reward.value == pytest.approx(1.0)
    assert (pairs["x", "z"].wins, pairs["x", "z"].losses) == (0, 2)
    assert (pairs["y", "z"].wins, pairs["y", "z"].ties) == (1, 1)


def test_standings_add_up_both_sides(records):
    table = {s.model: s for s in standings(summarise_pairs(records))}
    assert (table["x"].games, table["x"].wins, table["x"].losses, table["x"].ties) == (7, 3, 3, 1)
    assert (table["y"].games, table["y"].wins, table["y"].losses, table["y"].ties) == (7, 2, 3, 2)
    assert (table["z"].games, table["z"].wins, table["z"].losses, table["z"].ties) == (4, 2, 1, 1)
    ordered = [s.model for s in standings(summarise_pairs(records))]
    assert ordered == ["z", "x", "y"]


def test_win_rate_matrix_is_complementary_up_to_ties(records):
    models = ["x", "y", "z"]
    matrix = win_rate_matrix(models, summarise_pairs(records))
    assert all(math.isnan(matrix[i][i]) for i in range(3))
    assert matrix[0][1] == pytest.approx(0.6) and matrix[1][0] == pytest.approx(0.2)
    assert matrix[0][2] == 0.0 and matrix[2][0] == 1.0
    assert matrix[1][2] + matrix[2][1] == pytest.approx(0.5)  # one tie in two games
    ties = tie_matrix(models, summarise_pairs(records))
    assert ties[0][1] == ties[1][0] == pytest.approx(0.2)
    assert ties[1][2] == ties[2][1] == pytest.approx(0.5)
    assert ties[0][2] == 0.0
    for i in range(3):
        for j in range(3):
            if i != j:  # wins, losses and ties of a pair cover all its games
                assert matrix[i][j] + matrix[j][i] + ties[i][j] == pytest.approx(1.0)


def test_writers_round_trip(tmp_path, records):
    pairs = summarise_pairs(records)
    write_csv(tmp_path / "pairs.csv", pairs)
    write_csv(tmp_path / "games.csv", records)
    write_json(tmp_path / "report.json", {"pairs": pairs, "games": records})

    with open(tmp_path / "pairs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["a"], r["b"], int(r["wins"])) for r in rows] == [
        ("x", "y", 3), ("x", "z", 0), ("y", "z", 1)
    ]
    assert float(rows[0]["win_rate_low"]) == pytest.approx(pairs[0].win_rate.low)
    with open(tmp_path / "games.csv") as f:
        assert len(list(csv.DictReader(f))) == len(records)

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["pairs"][0]["win_rate"]["value"] == pytest.approx(0.6)
    # A single game has no spread: NaN bounds must become valid JSON (null).
    single = summarise_pairs([record("p", "q", 0, 1, 0)])
    write_json(tmp_path / "single.json", {"pairs": single})
    assert json.loads((tmp_path / "single.json").read_text())["pairs"][0]["a_kills"]["low"] is None


def test_reports_written_when_games_were_rounds_read_in_todays_words(tmp_path, records):
    pairs = summarise_pairs(records)
    write_json(tmp_path / "new.json", {"protocol": {"games_per_pair": 5}, "pairs": pairs,
                                       "games": records})
    old = json.loads((tmp_path / "new.json").read_text())
    old["protocol"] = {"rounds_per_pair": 5, "checkpoints": {"round": "runs/round/last.pt"}}
    old["rounds"] = [{**r, "round": r.pop("game")} for r in old.pop("games")]
    for pair in old["pairs"]:
        pair["rounds"] = pair.pop("games")
    (tmp_path / "old.json").write_text(json.dumps(old))

    report = read_report(tmp_path / "old.json")
    assert report["protocol"] == {"games_per_pair": 5,
                                  "checkpoints": {"round": "runs/round/last.pt"}}  # a label
    assert report["pairs"] == read_report(tmp_path / "new.json")["pairs"]
    assert report["games"] == read_report(tmp_path / "new.json")["games"]


def test_write_csv_rejects_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_csv(tmp_path / "empty.csv", [])


def test_markdown_lists_every_pair_and_model(records):
    pairs = summarise_pairs(records)
    text = markdown_report("T", {"map size": 40}, standings(pairs), pairs, heatmap="w.png")
    assert "- map size: 40" in text
    assert "| x | y | 5 | 3 | 1 | 1 | 0.60 [" in text
    for model in "xyz":
        assert f"\n| {model} | " in text
    assert "(w.png)" in text


def test_a_schedule_between_groups_leaves_out_pairs_of_one_group_and_keeps_the_others_games():
    from cmfq.evaluation.tournament import pairs_to_play, schedule

    groups = ["mfq", "mfq", "cmfq", "random"]
    full = schedule(pairs_to_play("all", groups), games=2, seed=0)
    between = schedule(pairs_to_play("between-groups", groups), games=2, seed=0)
    assert {g.players for g in between} == {g.players for g in full} - {(0, 1), (1, 0)}
    assert set(between) <= set(full)  # the same games, seeds and sides as in the full schedule
    with pytest.raises(ValueError, match="same group"):
        pairs_to_play("between-groups", ["mfq", "mfq"])
    with pytest.raises(ValueError, match="pairs must be one of"):
        pairs_to_play("some", groups)


def test_seed_matched_pairs_meet_their_seed_in_every_other_group_and_random_meets_all():
    from cmfq.evaluation.tournament import pairs_to_play, schedule

    # mfq and cmfq with seeds 0 and 1, a second cmfq variant of seed 0 (same group), random.
    groups = ["mfq", "cmfq", "mfq", "cmfq", "cmfq", "random"]
    seeds = [0, 0, 1, 1, 0, None]
    pairs = pairs_to_play("seed-matched", groups, seeds)
    assert pairs == [(0, 1), (0, 4), (0, 5), (1, 5), (2, 3), (2, 5), (3, 5), (4, 5)]
    # A pair plays the games it would play in a tournament of all pairs.
    full = schedule(pairs_to_play("all", groups), games=2, seed=0)
    assert set(schedule(pairs, games=2, seed=0)) <= set(full)
    with pytest.raises(ValueError, match=r"mfq has seed\(s\) \[2\] that cmfq lacks \(cmfq's "
                       r"seeds: \[0, 1\]\)"):
        pairs_to_play("seed-matched", ["mfq", "cmfq", "mfq", "cmfq", "mfq"], [0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="training seed"):
        pairs_to_play("seed-matched", groups)
