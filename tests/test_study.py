"""The study runner's rules (experiments/study.py), on synthetic reports."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

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


def test_battle_tournaments_are_always_handed_to_cmfq_which_plays_what_is_missing(
        study, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(study, "cmfq", lambda *args: calls.append(args))
    plan = study.QUICK
    players = ["a.pt", "random"]
    for env, key in (("battle", "games_per_pair"), ("tiger-deer", "games_per_model")):
        out = tmp_path / env
        out.mkdir()
        protocol = {key: 2, "map_size": 12, "max_steps": 30,
                    "checkpoints": {"a": "a.pt", "random": "random"}}
        (out / "report.json").write_text(json.dumps({"protocol": protocol}))
        study.tournament(plan, env, players, 12, 2, out, workers=1, max_steps=30)
    # The battle report is up to date too, but only cmfq tournament knows which of its games
    # still hold (the checkpoints' digests); an up-to-date tiger-deer report is kept.
    (battle,) = calls
    assert battle[:3] == ("tournament", "a.pt", "random")
    assert battle[battle.index("--pairs") + 1] == "seed-matched"
    assert battle[battle.index("--group-by") + 1] == "label"


@pytest.mark.parametrize("max_steps, flags",
                         [((None, 1000), ()), ((30, 1000), ("--max-steps", "30"))])
def test_the_replay_is_played_at_the_first_map_with_its_step_limit(
        study, tmp_path, monkeypatch, max_steps, flags):
    calls = []

    def render(*args):  # a three-frame GIF where cmfq render would write one
        calls.append(args)
        frames = [Image.new("RGB", (4, 4), colour) for colour in ("red", "white", "blue")]
        frames[0].save(args[-1], save_all=True, append_images=frames[1:])

    monkeypatch.setattr(study, "cmfq", render)
    plan = dataclasses.replace(study.QUICK, reports=tmp_path, max_steps=max_steps)
    (tmp_path / "figures").mkdir()
    picks = {f"{algo}-battle": {"checkpoint": f"{algo}.pt"} for algo in ("cmfq", "mfq")}
    (tmp_path / "picks.json").write_text(json.dumps(picks))
    study.replay(plan)
    (call,) = calls
    assert call == ("render", "cmfq.pt", "mfq.pt", "--map-size", "12", *flags, "--cell", "12",
                    "--out", tmp_path / "figures" / "replay.gif")
    assert (tmp_path / "figures" / "replay-frame.png").is_file()


def test_seed_mean(study):
    assert study.seed_mean([2.0]) == "2.00"
    # Three runs: mean ± t(2)·s/√3 with s = 1.
    assert study.seed_mean([1.0, 2.0, 3.0]) == f"2.00 ± {4.3027 / 3 ** 0.5:.2f}"


def estimate(value, low, high):
    return {"value": value, "low": low, "high": high}


def test_algorithm_table(study):
    report = {"algorithms": {
        "members": {"cmfq": ["c0", "c1"], "mfq": ["m0"], "random": ["random"]},
        "pairs": [{"a": "cmfq", "b": "mfq", "win_rate": estimate(0.6, 0.5, 0.7),
                   "loss_rate": estimate(0.3, 0.2, 0.4)}],
        "standings": [{"algorithm": "cmfq", "win_rate": estimate(0.6, 0.5, 0.7)},
                      {"algorithm": "mfq", "win_rate": estimate(0.3, 0.2, 0.4)}],
        "against_random": [
            {"a": "cmfq", "b": "random", "win_rate": estimate(1.0, 0.9, 1.0),
             "loss_rate": estimate(0.0, 0.0, 0.1)},
            {"a": "mfq", "b": "random", "win_rate": estimate(1.0, None, None),
             "loss_rate": estimate(0.0, None, None)}],
    }}
    assert study.algorithm_table(report) == [
        "| row vs column | cmfq | mfq | random | vs the field |",
        "|---|---|---|---|---|",
        "| **cmfq** (2) |  | 0.60 [0.50, 0.70] | 1.00 [0.90, 1.00] | 0.60 [0.50, 0.70] |",
        "| **mfq** (1) | 0.30 [0.20, 0.40] |  | 1.00 | 0.30 [0.20, 0.40] |",
        "| **random** (1) | 0.00 [0.00, 0.10] | 0.00 |  |  |",
    ]


def test_tiger_table(study):
    report = {"algorithms": {"summaries": [
        {"algorithm": "cmfq", "checkpoints": 3, "deer_caught": estimate(4, 3, 5.5),
         "reward": estimate(1.25, 1, 1.5)}]}}
    assert study.tiger_table(report)[2:] == ["| cmfq | 3 | 4.00 [3.00, 5.50] | 1.25 [1.00, 1.50] |"]


@pytest.fixture
def finished_study(study, tmp_path, monkeypatch):
    """A plan in ``tmp_path`` whose runs are untrained networks saved as finished, with metrics
    and reports written by hand."""
    from cmfq.algos import make_algorithm
    from cmfq.envs import make_env
    from cmfq.training.checkpoint import save_checkpoint
    from cmfq.training.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    plan = study.Plan(
        sweeps={env: (tmp_path / f"{env}.toml",) for env in study.ENVS}, runs=tmp_path / "runs",
        reports=tmp_path / "results", page=tmp_path / "results.md",
        models=tmp_path / "models", maps=(12, 16), games=2, tiger_games=2)
    # Battle's sweep names variants (its runs grouped by label), tiger-deer's algorithms.
    grids = {"battle": 'seed = [0, 1]\nvariant = ["il", "mfq", "cmfq"]\n' + "".join(
                 f'[variants.{a}]\nalgo = "{a}"\n' for a in ("il", "mfq", "cmfq")),
             "tiger-deer": 'algo = ["il", "mfq", "cmfq"]\nseed = [0, 1]\n'}
    checkpoints = {}
    for env, size in (("battle", 12), ("tiger-deer", 10)):
        plan.sweeps[env][0].write_text(f'[base]\nenv = "{env}"\nmap_size = {size}\n'
                                       f'rounds = 20\n[grid]\n{grids[env]}')
        spec = make_env(env, size, seed=0).specs[make_env(env, size, seed=0).groups[0]]
        folders = study.planned_runs(plan, env)
        for algo in ("cmfq", "mfq"):
            for seed in (0, 1):
                label = f"{algo}-seed{seed}"
                run = plan.runs / env / (f"seed={seed},variant={algo}" if env == "battle"
                                         else f"algo={algo},seed={seed}")
                assert run in folders
                config = TrainConfig(algo=algo, env=env, map_size=size, seed=seed, rounds=20,
                                     label=algo if env == "battle" else "", out=str(run))
                (run / "config.toml").parent.mkdir(parents=True)
                (run / "config.toml").write_text(config.to_toml())
                save_checkpoint(run / "last.pt", make_algorithm(algo, spec), config,
                                group=spec.name, round_index=20)
                # The reward rises by 1 + seed a round, the kills by twice that.
                rewards = [r * (1 + seed) for r in range(20)]
                (run / "metrics.csv").write_text("round,reward,kills\n" + "".join(
                    f"{r},{x},{2 * x}\n" for r, x in enumerate(rewards)))
                checkpoints[env, label] = str(run / "last.pt")
    members = {"cmfq": ["cmfq-seed0", "cmfq-seed1"], "mfq": ["mfq-seed0", "mfq-seed1"],
               "random": ["random"]}
    for size, (c0_vs_m0, c1_vs_m0) in ((12, (5, 5)), (16, (3, 9))):
        players = {label: path for (env, label), path in checkpoints.items() if env == "battle"}
        # Every run wipes out the random team of 4 on either side.
        games = [{"a": label, "b": "random", "a_side": side, "a_kills": 4, "b_kills": 1,
                  "a_survivors": 3, "b_survivors": 0} for label in players for side in (0, 1)]
        report = {
            "protocol": {"map_size": size, "checkpoints": players | {"random": "random"}},
            "games": games,
            "algorithms": {"members": members, "pairs": [], "standings": [
                {"algorithm": a, "win_rate": estimate(0.5, 0.4, 0.6)} for a in members]},
            "pairs": [pair("cmfq-seed0", "mfq-seed0", c0_vs_m0, 10 - c0_vs_m0),
                      pair("cmfq-seed1", "mfq-seed0", c1_vs_m0, 10 - c1_vs_m0),
                      pair("cmfq-seed0", "mfq-seed1", 5, 5), pair("cmfq-seed1", "mfq-seed1", 5, 5)],
        }
        (plan.reports / f"battle-map{size}").mkdir(parents=True)
        (plan.reports / f"battle-map{size}" / "report.json").write_text(json.dumps(report))
    caught = {"cmfq-seed0": 2.0, "cmfq-seed1": 3.0, "mfq-seed0": 1.0, "mfq-seed1": 1.0}
    tiger = {
        "protocol": {"rounds_per_model": 2, "checkpoints": {
            label: path for (env, label), path in checkpoints.items() if env == "tiger-deer"}},
        "models": [{"model": label, "deer_caught": {"value": value},
                    "reward": {"value": value / 2}} for label, value in caught.items()],
        "algorithms": {"summaries": []},
    }
    (plan.reports / "tiger-deer").mkdir()
    (plan.reports / "tiger-deer" / "report.json").write_text(json.dumps(tiger))
    return plan, checkpoints


def test_pick_takes_the_best_run_of_each_algorithm(study, finished_study):
    plan, checkpoints = finished_study
    picks = study.pick(plan)
    # Battle, cmfq: both runs win half at the training map; the larger map breaks the tie.
    assert picks["cmfq-battle"] == {
        "run": "cmfq-seed1", "checkpoint": checkpoints["battle", "cmfq-seed1"], "score": 0.5,
        "seeds": 2, "kills_vs_random": {"12": [1.0, 1.0], "16": [1.0, 1.0]}}
    # mfq: both win half at home; seed 1 wins more away (0.5 to 0.4).
    assert picks["mfq-battle"]["run"] == "mfq-seed1"
    assert picks["cmfq-tiger-deer"]["run"] == "cmfq-seed1"
    assert picks["mfq-tiger-deer"]["run"] == "mfq-seed0"  # a tie: the lower seed
    assert (plan.models / "cmfq-battle.pt").read_bytes() == Path(
        checkpoints["battle", "cmfq-seed1"]).read_bytes()
    assert json.loads((plan.reports / "picks.json").read_text()) == picks


def test_pick_prefers_runs_that_beat_a_random_team(study, finished_study):
    plan, _ = finished_study
    # mfq-seed1 wins more away, but on the larger map it kills only 2 of the 4 random agents
    # when it plays the second side: mfq-seed0 is picked.
    path = plan.reports / "battle-map16" / "report.json"
    report = json.loads(path.read_text())
    for game in report["games"]:
        if game["a"] == "mfq-seed1" and game["a_side"] == 1:
            game["a_kills"], game["b_survivors"] = 2, 2
    path.write_text(json.dumps(report))
    assert study.kills_against_random(report)["mfq-seed1"] == {0: 1.0, 1: 0.5}
    picks = study.pick(plan)
    assert picks["mfq-battle"]["run"] == "mfq-seed0"
    assert study.kill_cell({"12": [1.0, 0.95], "16": [0.5, None]}) == (
        "map 12: 1.00, 0.95; map 16: 0.50 (short), not played")


def test_flattening_table_and_results_page(study, finished_study):
    plan, _ = finished_study
    # 20 rounds, the reward rising by 1 + seed a round: over the last 4 rounds (a fifth) the
    # line's change is 3 (seed 0) and 6 (seed 1): 4.5 ± t(1)·s/√2 with s = 3/√2. The rise from
    # the first tenth (rounds 0-1) to the last 4 rounds is 17 and 34. The kills, twice as much.
    late, rise = f"4.50 ± {12.7062 * 1.5:.2f}", f"25.50 ± {12.7062 * 8.5:.2f}"
    kills = f"9.00 ± {12.7062 * 3:.2f} | 51.00 ± {12.7062 * 17:.2f}"
    # Not under a tenth of the rise, but two seeds' interval holds 0: flattened, by the rule.
    assert study.flattening_table(plan, "battle")[2:] == [
        f"| {a} | 2 | {late} | {rise} | {kills} | yes |" for a in ("cmfq", "mfq")]
    # One run has no interval: its late change (3, 6 for the kills) against a tenth of its rise
    # (1.7, 3.4) alone says it still rises.
    for algo in ("cmfq", "mfq"):
        (plan.runs / "battle" / f"seed=1,variant={algo}").rename(plan.runs / f"aside-{algo}")
    assert study.flattening_table(plan, "battle")[2:] == [
        f"| {a} | 1 | 3.00 | 17.00 | 6.00 | 34.00 | no |" for a in ("cmfq", "mfq")]
    for algo in ("cmfq", "mfq"):
        (plan.runs / f"aside-{algo}").rename(plan.runs / "battle" / f"seed=1,variant={algo}")
    study.pick(plan)
    study.results_page(plan)
    page = plan.page.read_text()
    assert "## Battle, map 16" in page and "| `pretrained:cmfq-battle` | cmfq-seed1 |" in page
    # Each sweep plans two runs of il, mfq and cmfq; il's have not finished.
    assert "- battle: cmfq 2 of 2, il 0 of 2, mfq 2 of 2" in page and "Not complete yet" in page
    # What a person wrote under the mark survives a regeneration.
    plan.page.write_text(page.replace("_Not written yet: read the tables and curves above "
                                      "first._", "CMFQ wins."))
    study.results_page(plan)
    assert plan.page.read_text().endswith("CMFQ wins.\n")


def test_diagnostics_table_averages_the_last_tenth_of_the_weighting_runs(study, finished_study):
    plan, _ = finished_study
    for seed, (effect, shift) in enumerate(((1e-4, "0.5"), (3e-4, "nan"))):
        rows = [f"{r},0,0,{effect},0.9,{shift},0\n" for r in range(20)]
        (plan.runs / "battle" / f"seed={seed},variant=cmfq" / "metrics.csv").write_text(
            "round,reward,kills,effect_sum,weight_entropy,mean_shift,uniform_fallback\n"
            + "".join(rows))
    # mfq's runs log no diagnostics (their metrics have none of the columns): left out.
    assert study.diagnostics_table(plan)[2:] == [
        "| cmfq | 2 | 0.0002 ± 0.00127 | 0.9 ± 0 | 0.5 | 0 ± 0 |"]


def test_sensitivity_table_gives_each_group_its_ratio_to_the_floor(study, finished_study):
    plan, _ = finished_study
    # Per run: sensitivity 2e-3 * (seed + 1) over a floor of 1e-4, the swap at its floor.
    for algo in ("cmfq", "mfq"):
        for seed in (0, 1):
            level = 2e-3 * (seed + 1)
            rows = [f"{r},0,0,{level},1e-4,1e-4,1e-4\n" for r in range(20)]
            (plan.runs / "battle" / f"seed={seed},variant={algo}" / "metrics.csv").write_text(
                "round,reward,kills,sensitivity,sensitivity_floor,sensitivity_swap,"
                "sensitivity_swap_floor\n" + "".join(rows))
    spread = f"0.003 ± {12.7062 * 0.001:.3g}"
    assert study.sensitivity_table(plan)[2:] == [
        f"| {a} | 2 | {spread} | 0.0001 ± 0 | 30 [20, 40] | 0.0001 ± 0 | 0.0001 ± 0 | 1 [1, 1] |"
        for a in ("cmfq", "mfq")]


def test_head_to_head_counts_the_seeds_and_game_ends_the_sides(study):
    report = {
        "protocol": {"checkpoints": {"c0": "c0.pt", "c1": "c1.pt", "m0": "m0.pt", "m1": "m1.pt",
                                     "random": "random"}},
        "algorithms": {
            "members": {"cmfq": ["c0", "c1"], "mfq": ["m0", "m1"], "random": ["random"]},
            "seeds": {"c0": 0, "c1": 1, "m0": 0, "m1": 1},
            "pairs": [{"a": "mfq", "b": "cmfq", "games": 20, "wins": 9, "losses": 10,
                       "ties": 1, "win_rate": estimate(0.45, 0.2, 0.7),
                       "loss_rate": estimate(0.5, 0.3, 0.7)}],
        },
        # seed 0: cmfq wins 7 of 10; seed 1: 3 of 10, mfq 6, one tie.
        "pairs": [pair("c0", "m0", 7, 3), pair("m1", "c1", 6, 3), pair("c0", "random", 10, 0)],
        "games": [
            {"a": "c0", "b": "m0", "a_side": 0, "a_survivors": 3, "b_survivors": 0,
             "steps": 80},
            {"a": "c0", "b": "m0", "a_side": 1, "a_survivors": 2, "b_survivors": 1,
             "steps": 400},
            {"a": "m1", "b": "c1", "a_side": 0, "a_survivors": 1, "b_survivors": 1,
             "steps": 400},
            {"a": "c0", "b": "random", "a_side": 0, "a_survivors": 5, "b_survivors": 0,
             "steps": 30},
        ],
    }
    # mfq's pair, read from cmfq's side: the rates swap.
    assert study.head_to_head(report)[2:] == [
        "| cmfq against mfq | 2 | 0.50 [0.30, 0.70] | 0.45 [0.20, 0.70] | 0.05 | 1 / 1 |"]
    # Three games between trained teams (random's left out): two at the limit; the first
    # side won one, the second one, one tie.
    assert study.game_ends(report, 400) == (
        "Of the 3 games between trained teams, 67% reached the limit of 400 steps (won by more "
        "survivors then); the first side won 1, the second 1 (ties: 1).")
    # With decided games at two seeds, the sides' wins by seed too.
    report["games"].append({"a": "m1", "b": "c1", "a_side": 1, "a_survivors": 0,
                            "b_survivors": 4, "steps": 50})
    assert study.game_ends(report, 400).endswith(
        "the first side won 2, the second 1 (ties: 1). The first side's wins of the decided "
        "games, by seed: 0: 1 of 2, 1: 1 of 1.")


def test_crossplay_takes_the_seeds_that_every_group_has_finished(study, finished_study):
    plan, checkpoints = finished_study
    runs, seeds = study.crossplay_runs(plan)
    assert seeds == [0, 1] and len(runs) == 4  # il's runs have not finished: no group yet
    # Seed 1 of mfq unfinished: seed 1 waits for it, in every group.
    (plan.runs / "battle" / "seed=1,variant=mfq" / "last.pt").unlink()
    runs, seeds = study.crossplay_runs(plan)
    assert seeds == [0] and runs == [Path(checkpoints["battle", f"{a}-seed0"])
                                     for a in ("mfq", "cmfq")]


def test_references_cross_play_in_their_own_tournament_and_are_picked_from_it(
        study, finished_study, monkeypatch):
    from dataclasses import replace

    from cmfq.algos import make_algorithm
    from cmfq.envs import make_env
    from cmfq.training.checkpoint import save_checkpoint
    from cmfq.training.config import TrainConfig

    plan, checkpoints = finished_study
    references = plan.sweeps["battle"][0].with_name("battle-references.toml")
    references.write_text('[base]\nenv = "battle"\nmap_size = 12\nrounds = 20\n[grid]\n'
                          'seed = [0]\nvariant = ["il"]\n[variants.il]\nalgo = "il"\n')
    plan = replace(plan, sweeps={**plan.sweeps, "battle": (*plan.sweeps["battle"], references)},
                   references=(references,))
    played = []
    monkeypatch.setattr(study, "tournament", lambda plan, env, players, size, games, out, *a:
                        played.append((out.name, players)))
    compared = [checkpoints["battle", f"{a}-seed{s}"] for s in (0, 1) for a in ("mfq", "cmfq")]
    # No reference has finished: the compared variants' tournaments alone, at every seed.
    study.crossplay(plan, workers=1)
    assert played == [(f"battle-map{size}", [*compared, "random"]) for size in (12, 16)]
    assert study.references_lines(plan, str)[-2].endswith("at the seeds that all have "
                                                          "finished (none yet).")
    # IL's seed 0 finishes: its tournaments take seed 0 of every group; the compared keep both.
    run = plan.runs / "battle-references" / "seed=0,variant=il"
    run.mkdir(parents=True)
    config = TrainConfig(algo="il", env="battle", map_size=12, seed=0, rounds=20, label="il",
                         out=str(run))
    (run / "config.toml").write_text(config.to_toml())
    spec = make_env("battle", 12, seed=0).specs["red"]
    save_checkpoint(run / "last.pt", make_algorithm("il", spec), config, group=spec.name,
                    round_index=20)
    (run / "metrics.csv").write_text("round,reward,kills\n" + "".join(
        f"{r},{r},{r}\n" for r in range(20)))
    assert study.crossplay_runs(plan) == ([Path(p) for p in compared], [0, 1])
    assert study.crossplay_runs(plan, references=True) == (
        [Path(checkpoints["battle", f"{a}-seed0"]) for a in ("mfq", "cmfq")] + [run / "last.pt"],
        [0])
    played.clear()
    study.crossplay(plan, workers=1)
    assert [name for name, _ in played] == [
        "battle-map12", "battle-map16", "battle-references-map12", "battle-references-map16"]
    # The references' tournament: il beats both, and its pick is scored there; cmfq's and
    # mfq's picks still come from their own tournament (cmfq-seed1 wins its tie there).
    labels = {"mfq-seed0": checkpoints["battle", "mfq-seed0"],
              "cmfq-seed0": checkpoints["battle", "cmfq-seed0"], "il-seed0": str(run / "last.pt")}
    for size in (12, 16):
        games = [{"a": label, "b": "random", "a_side": side, "a_kills": 4, "b_kills": 1,
                  "a_survivors": 3, "b_survivors": 0} for label in labels for side in (0, 1)]
        members = {"cmfq": ["cmfq-seed0"], "mfq": ["mfq-seed0"], "il": ["il-seed0"],
                   "random": ["random"]}
        report = {
            "protocol": {"map_size": size, "checkpoints": labels | {"random": "random"}},
            "games": games,
            "algorithms": {"members": members, "pairs": [], "standings": []},
            "pairs": [pair("il-seed0", "mfq-seed0", 8, 2), pair("il-seed0", "cmfq-seed0", 7, 3),
                      pair("cmfq-seed0", "mfq-seed0", 9, 1)],
        }
        (plan.reports / f"battle-references-map{size}").mkdir(parents=True)
        (plan.reports / f"battle-references-map{size}" / "report.json").write_text(
            json.dumps(report))
    picks = study.pick(plan)
    assert picks["il-battle"] == {
        "run": "il-seed0", "checkpoint": str(run / "last.pt"), "seeds": 1, "score": 0.75,
        "kills_vs_random": {"12": [1.0, 1.0], "16": [1.0, 1.0]}}
    assert picks["cmfq-battle"]["run"] == "cmfq-seed1"
    study.results_page(plan)
    page = plan.page.read_text()
    assert "## References" in page and "at the seeds that all have finished: so far 0." in page
    assert "### Map 16" in page and "battle-references-map16/report.md" in page
