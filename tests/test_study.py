"""The study runner's rules (experiments/study.py), on synthetic reports."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def pair(a, b, wins, losses, games=10):
    return {"a": a, "b": b, "wins": wins, "losses": losses, "games": games}


def test_pick_score_counts_only_the_other_algorithms(study):
    report = {
        "algorithms": {"members": {"cmfq": ["c0", "c1"], "mfq": ["m0"], "random": ["random"]}},
        "pairs": [
            pair("c0", "c1", 10, 0),       # same algorithm: left out
            pair("c0", "m0", 6, 2),
            pair("c1", "m0", 3, 7),
            pair("c0", "random", 10, 0),   # random: left out
            pair("m0", "random", 0, 10),
        ],
    }
    assert study.score_against_others(report) == {
        "c0": pytest.approx(0.6), "c1": pytest.approx(0.3), "m0": pytest.approx(0.9 / 2)}


def test_reports_are_redone_when_players_or_settings_change(study, tmp_path):
    report = tmp_path / "report.json"
    settings = {"map_size": 20, "games_per_pair": 40, "max_steps": None}
    assert not study.up_to_date(report, ["a.pt", "random"], settings)
    protocol = {"map_size": 20, "games_per_pair": 40,
                "checkpoints": {"a": "a.pt", "random": "random"}}
    report.write_text(json.dumps({"protocol": protocol}))
    assert study.up_to_date(report, ["random", "a.pt"], settings)
    assert not study.up_to_date(report, ["a.pt", "b.pt", "random"], settings)
    assert not study.up_to_date(report, ["a.pt", "random"], {**settings, "games_per_pair": 50})
    assert not study.up_to_date(report, ["a.pt", "random"], {**settings, "max_steps": 100})
    # A report written when games were called rounds is still up to date.
    protocol["rounds_per_pair"] = protocol.pop("games_per_pair")
    report.write_text(json.dumps({"protocol": protocol}))
    assert study.up_to_date(report, ["random", "a.pt"], settings)


def test_seed_mean(study):
    assert study.seed_mean([2.0]) == "2.00"
    # Three runs: mean ± t(2)·s/√3 with s = 1.
    assert study.seed_mean([1.0, 2.0, 3.0]) == f"2.00 ± {4.3027 / 3 ** 0.5:.2f}"
