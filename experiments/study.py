"""The study "does CMFQ beat MFQ?": train, cross-play, evaluate, pick the pretrained models and
write docs/results.md, from one command. Every stage skips what is already done, so an
interrupted study continues where it stopped:

    python experiments/study.py                 # the study (hours to days on CPUs)
    python experiments/study.py --quick         # the whole pipeline on tiny runs, in minutes

Stages, in order (``--stages`` runs a subset):

train      ``cmfq sweep`` of each of ``Plan.sweeps`` (experiments/battle.toml, its references
           and experiments/tiger-deer.toml), each into experiments/runs/NAME/ for its file
           experiments/NAME.toml (finished runs are skipped, interrupted ones resumed); then each
           finished run's ``last.pt`` is stored in half precision. A finished run's
           ``config.toml``, ``metrics.csv`` and weights-only ``last.pt`` are committed (the rest
           of its folder is git-ignored), so a fresh clone trains only what is missing. The
           later stages take the runs finished so far, so the study can be read as it grows.
crossplay  ``cmfq tournament --pairs seed-matched --layout shifted --group-by label`` of the
           finished battle runs of the compared variants (the battle sweeps but
           ``Plan.references``) of the seeds that every variant has finished, and ``random``, at
           each map of ``Plan.maps``: each run meets the run of every other variant trained from
           its seed, over ``games / 2`` layouts from both sides. Then the same tournament with
           the references' runs too (IL and attention-MF, fewer seeds: attention-MF costs about
           six runs), at the seeds that every group has finished, into
           ``battle-references-map<size>``. A tournament keeps the games its report already
           holds, so new runs cost only their games.
tigerdeer  ``cmfq tournament --env tiger-deer`` of every tiger-deer run and ``random`` (kept
           as is while its players and settings are the same).
curves     ``cmfq plot`` of each env's runs (mean over seeds, 95% t interval).
pick       once every planned run has finished (until then it waits, as does replay): the
           pretrained models, one per algorithm and env, copied into ``Plan.models``:
           battle: of the runs of the variant named as the algorithm, among those that kill at
           least ``KILL_SHARE`` of a random team on either side at every map (all runs if none
           does), the run with the highest win rate (games won / games played) against the
           runs of the other variants at the training map (``random`` left out); ties go to the
           higher such rate over the larger maps, then to the lower seed. The compared
           variants are scored in their tournament, the references in theirs.
           tiger-deer: the run with the most deer caught per game, then the higher reward.
replay     ``cmfq render`` of the picked cmfq against the picked mfq, and one frame as a PNG.
results    the results page from the reports, with a marked place for the conclusion, which a
           person writes after reading the tables.

Only the package's command line and documented functions are used.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import torch

from cmfq.algos import ALGOS
from cmfq.algos.diagnostics import DIAGNOSTICS, SENSITIVITY
from cmfq.evaluation.curves import run_group
from cmfq.evaluation.report import read_report as load_report
from cmfq.evaluation.stats import t_quantile_975
from cmfq.sweep.spec import SweepSpec
from cmfq.training.checkpoint import load_checkpoint, store_half_precision
from cmfq.training.run_folder import RunFolder

# The study runs in the repository's root, so that the reports name checkpoints by paths
# relative to it (experiments/runs/battle/seed=0,variant=cmfq/last.pt), the same on every machine.
REPO = Path(__file__).resolve().parent.parent
HERE = Path("experiments")
STAGES = ("train", "crossplay", "tigerdeer", "curves", "pick", "replay", "results")
ENVS = ("battle", "tiger-deer")
# Training-log columns whose last rounds tell whether a run has stopped improving (kills are the
# enemies killed in battle, the deer eaten in tiger-deer).
PLATEAU_METRICS = ("reward", "kills")
LAYOUTS = ("--layout", "shifted")
"""The battle tournaments' start: the original blocks moved by an offset and gap drawn from
each game's seed, mirrored for the two sides, so that a pair meets over games / 2 layouts."""
BATTLE_STEPS = 400
"""battle's step limit when a plan gives none (the env's default)."""
KILL_SHARE = 0.9
"""What a picked battle model kills of a random team per game, at least, on either side at every
map (when any run of its algorithm does)."""
CONCLUSION_MARK = "<!-- conclusion: written by a person after reading the tables above -->"


@dataclass(frozen=True)
class Plan:
    """What a study trains and how it evaluates; ``FULL`` and ``QUICK`` below."""

    sweeps: dict[str, tuple[Path, ...]]
    """env -> its sweep configs (``cmfq sweep`` TOML); each trains into ``runs / <file stem>``."""
    runs: Path
    """Run folders, one subfolder per sweep file."""
    reports: Path
    """Tournament reports, figures and picks (committed beside the results page)."""
    page: Path
    """The results page."""
    models: Path
    """Where the picked models are copied as ``<algo>-<env>.pt``."""
    maps: tuple[int, ...]
    """Battle cross-play maps, the training map first."""
    games: int
    """Games per pair of models in cross-play: ``games / 2`` layouts, each played twice with
    the sides swapped."""
    tiger_games: int
    """Games per model in the tiger-deer evaluation."""
    max_steps: tuple[int | None, ...] = (None, None)
    """Steps per battle evaluation game at each of ``maps`` (None: the env's 400): long enough
    on the larger map that few games end at the limit rather than by a wipe-out."""
    group_by: tuple[tuple[str, str], ...] = (("battle", "label"), ("tiger-deer", "algo"))
    """env -> the config fields whose values group its runs: battle's sweeps name variants
    (``label``), tiger-deer's runs differ by algorithm only."""
    references: tuple[Path, ...] = ()
    """Battle sweeps (of ``sweeps``) whose groups are references rather than compared: they
    may have fewer seeds, so they cross-play in a tournament of their own with every group, at
    the seeds that all have finished, and the compared variants' tournament keeps all of its
    seeds."""


FULL = Plan(
    sweeps={"battle": (HERE / "battle.toml", HERE / "battle-references.toml"),
            "tiger-deer": (HERE / "tiger-deer.toml",)},
    runs=Path("experiments/runs"), reports=Path("docs/results"), page=Path("docs/results.md"),
    models=Path("src/cmfq/pretrained/models"), maps=(20, 40), games=20, tiger_games=50,
    max_steps=(None, 1000), references=(HERE / "battle-references.toml",),
)
QUICK = Plan(
    sweeps={env: (HERE / "quick" / f"{env}.toml",) for env in ENVS},
    runs=Path("runs/study-quick"), reports=Path("runs/study-quick/results"),
    page=Path("runs/study-quick/results.md"), models=Path("runs/study-quick/pretrained"),
    maps=(12, 16), games=4, tiger_games=2, max_steps=(30, 30),
)


def cmfq(*args: str) -> None:
    """Run a ``cmfq`` command with this interpreter; stop the study if it fails."""
    print("$ cmfq " + " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "cmfq.cli", *map(str, args)], check=True)


def planned_runs(plan: Plan, env: str, sweeps: tuple[Path, ...] | None = None
                 ) -> dict[Path, str]:
    """The folder of every run that ``env``'s sweeps plan (or those of them in ``sweeps``), in
    their order, with its group."""
    keys = dict(plan.group_by)[env].split(",")
    return {Path(run.config.out): "-".join(str(getattr(run.config, key)) for key in keys)
            for config in plan.sweeps[env] if sweeps is None or config in sweeps
            for run in SweepSpec.from_toml(config).runs(plan.runs / config.stem)}


def compared_sweeps(plan: Plan) -> tuple[Path, ...]:
    """The battle sweeps of the compared variants: all but the references."""
    return tuple(c for c in plan.sweeps["battle"] if c not in plan.references)


def finished_runs(plan: Plan, env: str) -> list[Path]:
    """The ``last.pt`` of every finished run that ``env``'s sweeps plan, in their order."""
    paths = [RunFolder(run).last_file for run in planned_runs(plan, env)
             if RunFolder(run).is_finished()]
    if not paths:
        raise SystemExit(f"no finished {env} runs under {plan.runs}; run the train stage first")
    return paths


def crossplay_runs(plan: Plan, *, references: bool = False) -> tuple[list[Path], list[int]]:
    """The ``last.pt`` of the finished battle runs that cross-play, in the sweeps' order, and
    their seeds: the seeds that every group with a finished run has finished. Seed-matched pairs
    need every group at the same seeds, so a run waits until each other group has its seed.
    The compared variants' runs, or with ``references`` those of every battle sweep."""
    seeds_of: dict[str, set[int]] = {}
    runs = []
    sweeps = None if references else compared_sweeps(plan)
    for run, group in planned_runs(plan, "battle", sweeps).items():
        folder = RunFolder(run)
        if folder.is_finished():
            seed = folder.saved_config().seed
            seeds_of.setdefault(group, set()).add(seed)
            runs.append((folder.last_file, seed))
    if not runs:
        raise SystemExit(f"no finished battle runs under {plan.runs}; run the train stage first")
    seeds = sorted(set.intersection(*seeds_of.values()))
    return [last for last, seed in runs if seed in seeds], seeds


def group_of(plan: Plan, env: str, run: Path) -> str:
    """The group (variant or algorithm) of the run in folder ``run``."""
    return run_group(run, dict(plan.group_by)[env])


def train(plan: Plan) -> None:
    for env in ENVS:
        for config in plan.sweeps[env]:
            cmfq("sweep", config, "--out", plan.runs / config.stem)
        for last in finished_runs(plan, env):
            if any(t.dtype == torch.float32 for t in load_checkpoint(last).model.values()):
                store_half_precision(last)


# --- evaluation --------------------------------------------------------------------------------

def up_to_date(report: Path, players: list[str], settings: dict) -> bool:
    """Whether ``report`` (a report.json) exists and was played by exactly ``players`` with the
    protocol ``settings``."""
    if not report.is_file():
        return False
    protocol = load_report(report)["protocol"]
    return sorted(protocol["checkpoints"].values()) == sorted(players) and all(
        protocol.get(key) == value for key, value in settings.items())


def tournament(plan: Plan, env: str, players: list[str], size: int, games: int, out: Path,
               workers: int, max_steps: int | None = None) -> None:
    """Play one tournament, or what is missing from it. In battle each run meets the run of
    every other variant trained from the same seed (the same initial weights), over
    ``games / 2`` layouts with the sides swapped; ``cmfq tournament`` keeps the games of the
    report in ``out`` that are still valid and plays the others. A tiger-deer report is kept
    when it is up to date, else played again."""
    if env == "tiger-deer" and up_to_date(out / "report.json", players, {
            "games_per_model": games, "map_size": size, "max_steps": max_steps}):
        print(f"{out}: up to date")
        return
    options = ("--group-by", dict(plan.group_by)[env])
    if env == "battle":
        options += ("--pairs", "seed-matched", *LAYOUTS)
    steps = () if max_steps is None else ("--max-steps", str(max_steps))
    cmfq("tournament", *players, "--env", env, "--map-size", str(size), "--games", str(games),
         *options, *steps, "--workers", str(workers), "--out", out)


def crossplay(plan: Plan, workers: int) -> None:
    families = [("battle", False)]
    if any(RunFolder(run).is_finished() for run in planned_runs(plan, "battle", plan.references)):
        families.append(("battle-references", True))
    for name, references in families:
        players = [str(p) for p in crossplay_runs(plan, references=references)[0]] + ["random"]
        for size, steps in zip(plan.maps, plan.max_steps, strict=True):
            tournament(plan, "battle", players, size, plan.games,
                       plan.reports / f"{name}-map{size}", workers, steps)


def tiger_deer_size(plan: Plan) -> int:
    with open(plan.sweeps["tiger-deer"][0], "rb") as f:
        return tomllib.load(f)["base"]["map_size"]


def tigerdeer(plan: Plan, workers: int) -> None:
    players = [str(p) for p in finished_runs(plan, "tiger-deer")] + ["random"]
    tournament(plan, "tiger-deer", players, tiger_deer_size(plan), plan.tiger_games,
               plan.reports / "tiger-deer", workers, plan.max_steps[0])


def curves(plan: Plan) -> None:
    for env in ENVS:
        runs = [p.parent for p in finished_runs(plan, env)]
        out = plan.reports / "figures" / f"curves-{env}.png"
        newest = max(RunFolder(r).metrics_file.stat().st_mtime for r in runs)
        if out.is_file() and out.stat().st_mtime > newest:
            print(f"{out}: up to date")
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        cmfq("plot", *runs, "--group-by", dict(plan.group_by)[env], "--out", out)


# --- pick --------------------------------------------------------------------------------------

def read_report(plan: Plan, name: str) -> dict:
    path = plan.reports / name / "report.json"
    if not path.is_file():
        raise SystemExit(f"no report {path}; run the evaluation stages first")
    return load_report(path)


def score_against_others(report: dict) -> dict[str, float]:
    """Label -> games won / games played against the checkpoints of the other algorithms."""
    group = {label: g for g, labels in report["algorithms"]["members"].items() for label in labels}
    won, played = {}, {}
    for p in report["pairs"]:
        if "random" in (group[p["a"]], group[p["b"]]) or group[p["a"]] == group[p["b"]]:
            continue
        for me, wins in ((p["a"], p["wins"]), (p["b"], p["losses"])):
            won[me] = won.get(me, 0) + wins
            played[me] = played.get(me, 0) + p["games"]
    return {label: won[label] / played[label] for label in won}


def kills_against_random(report: dict) -> dict[str, dict[int, float]]:
    """Label -> side (0 or 1) -> the mean share of the random team it killed per game there."""
    random = {label for label, path in report["protocol"]["checkpoints"].items()
              if path == "random"}
    shares: dict[str, dict[int, list[float]]] = {}
    for g in report["games"]:
        for me, other, side, kills, left in (
                (g["a"], g["b"], g["a_side"], g["a_kills"], g["b_survivors"]),
                (g["b"], g["a"], 1 - g["a_side"], g["b_kills"], g["a_survivors"])):
            # Kills count the opponent's deaths, so kills + survivors is its team at the start.
            if other in random and me not in random:
                shares.setdefault(me, {}).setdefault(side, []).append(kills / (kills + left))
    return {me: {side: sum(v) / len(v) for side, v in sorted(sides.items())}
            for me, sides in shares.items()}


def battle_candidates(plan: Plan) -> dict[str, list[tuple]]:
    """algo -> (ranking key, label, checkpoint, kill shares per map) of each cross-played run of
    the variant named as the algorithm, scored in its own tournaments: the compared variants' or
    the references'."""
    families = [("battle", compared_sweeps(plan))]
    if plan.references:
        families.append(("battle-references", plan.references))
    candidates: dict[str, list[tuple]] = {}
    for name, sweeps in families:
        reports = [read_report(plan, f"{name}-map{size}") for size in plan.maps]
        at_home = score_against_others(reports[0])
        away = [score_against_others(r) for r in reports[1:]]
        # map size -> label -> side -> share of a random team killed
        kills = {r["protocol"]["map_size"]: kills_against_random(r) for r in reports}
        own = planned_runs(plan, "battle", sweeps)
        for label, path in reports[0]["protocol"]["checkpoints"].items():
            group = own.get(Path(path).parent)
            if group not in ALGOS:  # random, another family's run, or a variant of an algorithm
                continue
            shares = [sides.get(label, {}) for sides in kills.values()]
            strong = all(len(s) == 2 and min(s.values()) >= KILL_SHARE for s in shares)
            key = (strong, at_home[label], sum(s[label] for s in away),
                   -load_checkpoint(path).config.seed)
            its_kills = {str(size): [sides.get(label, {}).get(side) for side in (0, 1)]
                         for size, sides in kills.items()}
            candidates.setdefault(group, []).append((key, label, path, its_kills))
    return candidates


def tiger_candidates(plan: Plan) -> dict[str, list[tuple]]:
    """algo -> (ranking key, label, checkpoint) of each tiger-deer run."""
    report = read_report(plan, "tiger-deer")
    candidates: dict[str, list[tuple]] = {}
    for label, path in report["protocol"]["checkpoints"].items():
        if path == "random":
            continue
        summary = next(m for m in report["models"] if m["model"] == label)
        key = (summary["deer_caught"]["value"], summary["reward"]["value"],
               -load_checkpoint(path).config.seed)
        candidates.setdefault(group_of(plan, "tiger-deer", Path(path).parent), []).append(
            (key, label, path))
    return candidates


def pick(plan: Plan) -> dict:
    """Choose and copy the pretrained models (the rule is in the module's docstring)."""
    picks = {}
    for env, candidates in (("battle", battle_candidates(plan)),
                            ("tiger-deer", tiger_candidates(plan))):
        for algo, ranked in sorted(candidates.items()):
            key, label, path, *kills = max(ranked)
            name = f"{algo}-{env}"
            plan.models.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, plan.models / f"{name}.pt")
            picks[name] = {"run": label, "checkpoint": path, "seeds": len(ranked)}
            if env == "battle":
                picks[name] |= {"score": key[1], "kills_vs_random": kills[0]}
            else:
                picks[name]["score"] = key[0]
    (plan.reports / "picks.json").write_text(json.dumps(picks, indent=2) + "\n")
    return picks


def replay(plan: Plan) -> None:
    frame = plan.reports / "figures" / "replay-frame.png"
    gif = plan.reports / "figures" / "replay.gif"
    picks = json.loads((plan.reports / "picks.json").read_text())
    first, second = (picks[f"{a}-battle"]["checkpoint"] for a in ("cmfq", "mfq"))
    limit = plan.max_steps[0]  # the replay is played at the first map, with its step limit
    steps = () if limit is None else ("--max-steps", str(limit))
    cmfq("render", first, second, "--map-size", str(plan.maps[0]), *steps, "--cell", "12",
         "--out", gif)
    with Image.open(gif) as animation:
        animation.seek(animation.n_frames // 3)  # the armies have met, most agents still alive
        animation.convert("RGB").save(frame)


# --- results page ------------------------------------------------------------------------------

def rate(estimate: dict) -> str:
    if estimate["low"] is None:  # a single run: no seed varies
        return f"{estimate['value']:.2f}"
    return f"{estimate['value']:.2f} [{estimate['low']:.2f}, {estimate['high']:.2f}]"


def algorithm_table(report: dict) -> list[str]:
    """Row group's win rate against each column group, with its t-interval over the seeds; the
    field leaves random out."""
    algorithms = report["algorithms"]
    names = list(algorithms["members"])
    cell = {}
    for p in algorithms["pairs"] + algorithms.get("against_random", []):  # older: in pairs
        cell[p["a"], p["b"]], cell[p["b"], p["a"]] = rate(p["win_rate"]), rate(p["loss_rate"])
    field = {s["algorithm"]: rate(s["win_rate"]) for s in algorithms["standings"]}
    lines = ["| row vs column | " + " | ".join(names) + " | vs the field |",
             "|---|" + "---|" * (len(names) + 1)]
    for a in names:
        cells = [cell.get((a, b), "") for b in names]
        lines.append(f"| **{a}** ({len(algorithms['members'][a])}) | " + " | ".join(cells)
                     + f" | {field.get(a, '')} |")
    return lines


COMPARED = (("cmfq", "mfq"), ("cmfq-relative", "mfq"), ("control", "mfq"),
            ("cmfq-relative", "cmfq"), ("cmfq-relative", "control"), ("mfq", "il"),
            ("amfq", "mfq"))
"""The head-to-head comparisons on the page, "a against b", where both groups have runs."""


def head_to_head(report: dict) -> list[str]:
    """``COMPARED``, seed by seed: a's win and loss rates against b (the mean over the seeds of
    each seed's pair, with the t-interval over the seeds), and in how many seeds a won more of
    the pair's games than it lost, and fewer."""
    algorithms = report["algorithms"]
    group = {label: g for g, labels in algorithms["members"].items() for label in labels}
    seeds = algorithms.get("seeds") or {}
    both: dict[tuple[str, str], dict] = {}
    for p in algorithms["pairs"]:
        both[p["a"], p["b"]] = p
        both[p["b"], p["a"]] = p | {"a": p["b"], "b": p["a"], "win_rate": p["loss_rate"],
                                    "loss_rate": p["win_rate"], "wins": p["losses"],
                                    "losses": p["wins"]}
    margins: dict[tuple[str, str], list[int]] = {}
    for p in report["pairs"]:
        if p["a"] in seeds and p["b"] in seeds:
            ga, gb = group[p["a"]], group[p["b"]]
            margins.setdefault((ga, gb), []).append(p["wins"] - p["losses"])
            margins.setdefault((gb, ga), []).append(p["losses"] - p["wins"])
    lines = ["| a against b | seeds | a's win rate | a's loss rate | ties | seeds a won / lost |",
             "|---|---:|---|---|---:|---|"]
    for a, b in COMPARED:
        if (a, b) not in both:
            continue
        p, m = both[a, b], margins.get((a, b), [])
        lines.append(
            f"| {a} against {b} | {len(m)} | {rate(p['win_rate'])} | {rate(p['loss_rate'])} | "
            f"{p['ties'] / p['games']:.2f} | {sum(x > 0 for x in m)} / {sum(x < 0 for x in m)} |")
    return lines


def game_ends(report: dict, max_steps: int) -> str:
    """How the games between trained teams ended: the share that reached the step limit (the
    others ended when a side was wiped out), and the games won by the first side and by the
    second (the first side's agents act first in magent2), in all and by seed."""
    random = {label for label, path in report["protocol"]["checkpoints"].items()
              if path == "random"}
    games = [g for g in report["games"] if g["a"] not in random and g["b"] not in random]
    if not games:
        return "No games between trained teams."
    at_limit = sum(g["steps"] >= max_steps for g in games)
    ties = sum(g["a_survivors"] == g["b_survivors"] for g in games)
    seed_of = report["algorithms"].get("seeds", {})
    by_seed: dict[int, list[int]] = {}  # seed -> [first side's wins, second side's]
    for g in games:
        if g["a_survivors"] != g["b_survivors"]:
            first_won = (g["a_survivors"] > g["b_survivors"]) == (g["a_side"] == 0)
            by_seed.setdefault(seed_of.get(g["a"], -1), [0, 0])[not first_won] += 1
    first = sum(wins[0] for wins in by_seed.values())
    text = (f"Of the {len(games)} games between trained teams, {at_limit / len(games):.0%} "
            f"reached the limit of {max_steps} steps (won by more survivors then); the first "
            f"side won {first}, the second {len(games) - first - ties} (ties: {ties}).")
    if len(by_seed) > 1:
        # The runs of a seed share their initial weights, so they may share a side preference
        # too; a pair plays each layout from both sides, so it cancels in a pair's rate.
        text += " The first side's wins of the decided games, by seed: " + ", ".join(
            f"{seed}: {f} of {f + s}" for seed, (f, s) in sorted(by_seed.items())) + "."
    return text


def tiger_table(report: dict) -> list[str]:
    """Per algorithm: the mean over its runs of their per-game means, with the report's
    t-interval over the runs."""
    lines = ["| algorithm | runs | deer caught per game | tiger reward per game |",
             "|---|---:|---|---|"]
    lines += [f"| {a['algorithm']} | {a['checkpoints']} | {rate(a['deer_caught'])} "
              f"| {rate(a['reward'])} |" for a in report["algorithms"]["summaries"]]
    return lines


def run_logs(plan: Plan, env: str) -> list[tuple[str, list[dict[str, str]]]]:
    """(group, rows of ``metrics.csv``) of every finished run of ``env``."""
    logs = []
    for last in finished_runs(plan, env):
        with open(RunFolder(last.parent).metrics_file, newline="") as f:
            logs.append((group_of(plan, env, last.parent), list(csv.DictReader(f))))
    return logs


FLAT_ROUNDS = 0.2
"""The share of a run's rounds at its end over which the flattening is judged."""


def flattening_table(plan: Plan, env: str) -> list[str]:
    """Have the runs stopped improving? Per run, the change of each metric over the last
    ``FLAT_ROUNDS`` of its rounds, read off a least-squares line through them (one round's
    noise cancels), next to its rise over the whole run (the mean of that last part less the
    mean of the first tenth); per group the mean over runs ± the 95% t interval. The criterion
    said on the page: flattened where the late change is under a tenth of the rise, or its
    interval holds 0 (a group of one run has no interval: the first test alone)."""
    late: dict[str, dict[str, list[float]]] = {}
    rise: dict[str, dict[str, list[float]]] = {}
    for group, rows in run_logs(plan, env):
        n = max(2, round(FLAT_ROUNDS * len(rows)))
        for metric in PLATEAU_METRICS:
            values = [float(row[metric]) for row in rows]
            tail = values[-n:]
            x = [i - (n - 1) / 2 for i in range(n)]
            slope = sum(a * b for a, b in zip(x, tail)) / sum(a * a for a in x)
            first = values[:max(1, len(values) // 10)]
            late.setdefault(group, {}).setdefault(metric, []).append(slope * (n - 1))
            rise.setdefault(group, {}).setdefault(metric, []).append(
                sum(tail) / n - sum(first) / len(first))
    lines = ["| group | runs | " + " | ".join(f"{m}: late change | {m}: rise"
                                              for m in PLATEAU_METRICS) + " | flattened |",
             "|---|---:|" + "---|---|" * len(PLATEAU_METRICS) + "---|"]
    for group in sorted(late):
        cells, flat = [], True
        for m in PLATEAU_METRICS:
            changes, rises = late[group][m], rise[group][m]
            mean, half = mean_and_halfwidth(changes)
            flat &= (abs(mean) < 0.1 * abs(sum(rises) / len(rises))
                     or (math.isfinite(half) and abs(mean) <= half))
            cells += [seed_mean(changes), seed_mean(rises)]
        lines.append(f"| {group} | {len(late[group][PLATEAU_METRICS[0]])} | "
                     + " | ".join(cells) + f" | {'yes' if flat else 'no'} |")
    return lines


def late_means(plan: Plan, env: str, columns: tuple[str, ...]) -> dict[str, dict[str, list]]:
    """group -> column -> per run, the mean of the column over the last tenth of its rounds
    (rows where it is missing or not finite are left out; runs that log none of it too)."""
    values: dict[str, dict[str, list[float]]] = {}
    for group, rows in run_logs(plan, env):
        last = rows[-max(1, len(rows) // 10):]
        for name in columns:
            logged = [float(row[name]) for row in last if row.get(name) not in (None, "")]
            logged = [v for v in logged if math.isfinite(v)]
            if logged:
                values.setdefault(group, {}).setdefault(name, []).append(sum(logged) / len(logged))
    return values


def diagnostics_table(plan: Plan) -> list[str]:
    """The neighbour-weight diagnostics of the battle runs that weight their neighbours (cmfq,
    amfq): per run the mean over its last tenth of rounds, then the mean over the runs ± the 95%
    t interval. Runs that log none (il, mfq, or runs older than the diagnostics) are left out."""
    values = late_means(plan, "battle", DIAGNOSTICS)
    lines = ["| group | runs | " + " | ".join(DIAGNOSTICS) + " |",
             "|---|---:|" + "---|" * len(DIAGNOSTICS)]
    for group, columns in sorted(values.items()):
        runs = max(len(v) for v in columns.values())
        cells = [seed_mean(columns[n], ".3g") if n in columns else "–" for n in DIAGNOSTICS]
        lines.append(f"| {group} | {runs} | " + " | ".join(cells) + " |")
    return lines


def sensitivity_table(plan: Plan) -> list[str]:
    """How much each group's policies move when their neighbour input moves, against the floor
    of the same network untrained: per run the means over its last tenth of rounds, then per
    group the median over runs of the ratio to the floor, and the runs' range of it."""
    values = late_means(plan, "battle", SENSITIVITY)
    lines = ["| group | runs | sensitivity (nats) | its floor | ratio: median [min, max] "
             "| swap | its floor | ratio: median [min, max] |", "|---|---:|" + "---|" * 6]
    for group, columns in sorted(values.items()):
        if not all(name in columns for name in SENSITIVITY):
            continue
        cells = []
        for measure, floor in zip(SENSITIVITY[::2], SENSITIVITY[1::2], strict=True):
            ratios = sorted(a / b for a, b in zip(columns[measure], columns[floor], strict=True)
                            if b > 0)
            spread = (f"{statistics.median(ratios):.3g} [{ratios[0]:.3g}, {ratios[-1]:.3g}]"
                      if ratios else "–")
            cells += [seed_mean(columns[measure], ".3g"), seed_mean(columns[floor], ".3g"),
                      spread]
        lines.append(f"| {group} | {len(columns[SENSITIVITY[0]])} | " + " | ".join(cells) + " |")
    return lines


def mean_and_halfwidth(values: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95% t interval (infinite for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, math.inf
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile_975(n - 1) * std / math.sqrt(n)


def seed_mean(values: list[float], fmt: str = ".2f") -> str:
    mean, half = mean_and_halfwidth(values)
    return f"{mean:{fmt}}" if math.isinf(half) else f"{mean:{fmt}} ± {half:{fmt}}"


def progress_lines(plan: Plan) -> list[str]:
    """How many runs of each group have finished, of those the sweeps plan; a warning when the
    study is not complete yet."""
    lines, missing = [], False
    for env in ENVS:
        planned: dict[str, int] = {}
        finished: dict[str, int] = {}
        for run, group in planned_runs(plan, env).items():
            planned[group] = planned.get(group, 0) + 1
            finished[group] = finished.get(group, 0) + RunFolder(run).is_finished()
        missing |= finished != planned
        counts = ", ".join(f"{g} {finished[g]} of {planned[g]}" for g in sorted(planned))
        lines.append(f"- {env}: {counts}")
    head = ["Runs finished, of those planned:", ""]
    warning = ["", "**Not complete yet**: the tables cover the finished runs only; "
               "`python experiments/study.py` trains the missing runs and plays only the "
               "missing games."] if missing else []
    return head + lines + warning + [""]


def kill_cell(kills: dict[str, list] | None) -> str:
    """``map 20: 1.00, 0.98; map 40: ...``, marked where a side falls short of ``KILL_SHARE``."""
    if kills is None:
        return "–"

    def share(value: float | None) -> str:
        if value is None:
            return "not played"
        return f"{value:.2f}" + (" (short)" if value < KILL_SHARE else "")

    return "; ".join(f"map {size}: " + ", ".join(map(share, sides))
                     for size, sides in kills.items())


WAITING = "not yet: the study's planned runs have not all finished (progress: docs/results.md)"


def complete(plan: Plan) -> bool:
    """Whether every run that the sweeps plan has finished."""
    return all(RunFolder(run).is_finished() for env in ENVS for run in planned_runs(plan, env))


def current_picks(plan: Plan) -> dict | None:
    """The picks of ``picks.json`` if they were made from this study's runs (their checkpoints
    are here), else None."""
    path = plan.reports / "picks.json"
    picks = json.loads(path.read_text()) if path.is_file() else {}
    if picks and all(Path(p["checkpoint"]).is_file() for p in picks.values()):
        return picks
    return None


def picks_lines(plan: Plan, link) -> list[str]:
    """The replay and the pretrained models' section: what was picked, and how."""
    picks = current_picks(plan)
    if picks is None:
        return ["", "## Pretrained models", "",
                "The shipped models (`cmfq.pretrained`) are not picked from these runs yet: the "
                "pick and replay stages wait until every planned run has finished.", ""]
    frame = link(plan.reports / "figures" / "replay-frame.png")
    lines = ["", "## A replay", "",
             f"The picked cmfq (red) against the picked mfq (blue), map {plan.maps[0]}:", "",
             f"![a frame of the replay]({frame})", "", "## Pretrained models", "",
             "Battle: per algorithm, among the runs that kill at least "
             f"{KILL_SHARE:.0%} of a random team on either side at every map, the run with the "
             "highest win rate against the runs of the other algorithms at the training map "
             "(random left out; ties: the larger maps, then the lower seed); the last column "
             "gives the share of the random team it killed per game, on the first side and on "
             "the second. Tiger-deer: the run with the most deer caught per game. Their scores "
             "are picked for being high: the tables above, over all seeds, are the fair "
             "comparison.", "",
             "| name | run | score | runs of its algorithm | random team killed |",
             "|---|---|---:|---:|---|"]
    return lines + [f"| `pretrained:{name}` | {p['run']} | {p['score']:.2f} | {p['seeds']} | "
                    f"{kill_cell(p.get('kills_vs_random'))} |" for name, p in picks.items()]


def battle_section(plan: Plan, name: str, max_steps: int | None, link) -> list[str]:
    """How the games of the tournament ``name`` ended, its head-to-head comparisons, the table
    between groups and its figure."""
    report = read_report(plan, name)
    return [game_ends(report, max_steps or BATTLE_STEPS), "", *head_to_head(report), "",
            *algorithm_table(report), "",
            f"![win rate between groups, {name}]"
            f"({link(plan.reports / name / 'algorithm_win_rate.png')})", "",
            f"Every run: [report]({link(plan.reports / name / 'report.md')}).", ""]


def references_lines(plan: Plan, link) -> list[str]:
    """The references' section: their tournaments with the compared variants, where played."""
    if not plan.references:
        return []
    played = [(size, steps) for size, steps in zip(plan.maps, plan.max_steps, strict=True)
              if (plan.reports / f"battle-references-map{size}" / "report.json").is_file()]
    groups = sorted(set(planned_runs(plan, "battle", plan.references).values()))
    lines = ["## References", "",
             f"{' and '.join(groups)} have fewer seeds than the compared variants, so they "
             "cross-play in a tournament of their own with every group, by the same rules, at "
             "the seeds that all have finished"]
    if not played:
        lines[-1] += " (none yet)."
        return lines + [""]
    lines[-1] += f": so far {', '.join(map(str, crossplay_runs(plan, references=True)[1]))}."
    lines.append("")
    for size, steps in played:
        lines += [f"### Map {size}", ""]
        lines += battle_section(plan, f"battle-references-map{size}", steps, link)
    return lines


def results_page(plan: Plan) -> None:
    def link(path: Path) -> str:
        return os.path.relpath(path, plan.page.parent)

    lines = [
        "# Does CMFQ beat MFQ?", "",
        f"Generated by `python experiments/study.py` from the reports in `{link(plan.reports)}/` "
        "(JSON and CSV, every game). Edit only the conclusion; rerun the script for the rest.",
        "", "## Setup", "",
    ]
    for env, configs in plan.sweeps.items():
        for config in configs:
            lines += [f"{env} runs (`cmfq sweep {config} --out {plan.runs / config.stem}`):", "",
                      "```toml", config.read_text().strip(), "```", ""]
    lines += progress_lines(plan)
    lines += [
        "Cross-play: each battle run meets the run of every other group trained from the same "
        f"seed (the same initial weights), {plan.games} games a pair from {plan.games // 2} "
        "layouts (the published blocks shifted by each game's seed, mirrored for the sides; "
        "`--layout shifted`), each layout played from both sides; a uniformly random team "
        "meets every run. Maps: "
        f"{', '.join(map(str, plan.maps))} (the training map first; the agents a side grow with "
        "the map's area). A game is won by the side with more survivors when one side is wiped "
        "out or the step limit is reached. Between groups: a's win rate against b is the mean "
        "over the seeds of the seed's pair, with the 95% t-interval over the seeds (its "
        "coverage checked by simulation: docs/evaluation.md); vs the field is the mean over "
        "the other groups, random left out (its column is apart). Rows: the number of runs. "
        f"Seeds cross-played so far: {', '.join(map(str, crossplay_runs(plan)[1])) or 'none'} "
        "(those that every compared variant has finished; a run waits until each other "
        "variant has its seed).",
        "",
    ]
    for size, steps in zip(plan.maps, plan.max_steps, strict=True):
        lines += [f"## Battle, map {size}", ""]
        lines += battle_section(plan, f"battle-map{size}", steps, link)
    lines += references_lines(plan, link)
    tiger = read_report(plan, "tiger-deer")
    lines += ["## Tiger-deer", "",
              f"Each run hunts as the tigers for {tiger['protocol']['games_per_model']} games "
              "against random deer, on the same seeds. Mean over the runs of their per-game "
              "means, with the 95% t-interval over the runs.", ""]
    lines += tiger_table(tiger) + [
        "", f"![per algorithm]({link(plan.reports / 'tiger-deer' / 'algorithm_scores.png')})", ""]
    lines += ["", "## Learning curves", "",
              "Mean over seeds with the 95% t interval of the mean.", ""]
    for env in ENVS:
        figure = link(plan.reports / "figures" / f"curves-{env}.png")
        lines += [f"![{env} learning curves]({figure})", "",
                  f"Have the {env} runs stopped improving? Per run, the change of each metric "
                  f"over the last {FLAT_ROUNDS:.0%} of its rounds, read off a least-squares line "
                  "(late change), next to its rise from the first tenth of the rounds to that "
                  "last part; per group the mean over runs ± the 95% t interval. Criterion: a "
                  "group has flattened where, for each metric, the late change is under a tenth "
                  "of the rise or its interval holds 0 (with one run, the first test alone).",
                  ""]
        lines += flattening_table(plan, env) + [""]
    lines += ["## Do the networks listen to their neighbours?", "",
              "The neighbour sensitivity (`metrics.csv`; docs/training.md): the KL divergence "
              "between the policy (τ = 0.1) under the neighbour input the agent acted with and "
              "under the uniform action (sensitivity) or another agent's input (swap), against "
              "the same measure of the same network before its first update (its floor). Per "
              "run the mean over its last tenth of rounds; per group the mean over runs ± the "
              "95% t interval and the median ratio to the floor with the runs' range. A ratio "
              "near 1 is a network that has learned nothing about its neighbours; IL's input is "
              "always zero, so its ratio is the level of a network that cannot use them.", ""]
    lines += sensitivity_table(plan) + [""]
    lines += diagnostics_table(plan) + [""]
    lines += picks_lines(plan, link)
    lines += ["", "## Conclusion", "", CONCLUSION_MARK, "",
              "_Not written yet: read the tables and curves above first._", ""]
    # Sections begin and end with a blank line; where two meet, one is enough.
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    # What a person wrote under the mark is kept when the page is regenerated.
    if plan.page.is_file() and CONCLUSION_MARK in plan.page.read_text():
        text = text.split(CONCLUSION_MARK)[0] + CONCLUSION_MARK + \
            plan.page.read_text().split(CONCLUSION_MARK, 1)[1]
    plan.page.parent.mkdir(parents=True, exist_ok=True)
    plan.page.write_text(text)
    print(f"results written to {plan.page}")


# --- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny runs and evaluations into runs/study-quick: tests the pipeline")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated stages to run (default: all: {','.join(STAGES)})")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes of each tournament (default: the number of CPUs)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    os.chdir(REPO)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"--stages: unknown {unknown}; stages: {', '.join(STAGES)}")
    steps = {
        "train": lambda: train(plan),
        "crossplay": lambda: crossplay(plan, args.workers),
        "tigerdeer": lambda: tigerdeer(plan, args.workers),
        "curves": lambda: curves(plan),
        "pick": lambda: pick(plan) if complete(plan) else print(WAITING),
        "replay": lambda: replay(plan) if current_picks(plan) else print(WAITING),
        "results": lambda: results_page(plan),
    }
    for stage in STAGES:
        if stage in stages:
            print(f"== {stage}", flush=True)
            steps[stage]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
