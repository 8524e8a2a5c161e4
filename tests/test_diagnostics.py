"""The weight diagnostics logged with every round: what they measure, and that measuring them
changes nothing that is learned."""

import csv
import math

import pytest
import torch

from cmfq.algos import make_algorithm
from cmfq.algos.common import QValues, TeamInput
from cmfq.algos.diagnostics import (
    DIAGNOSTICS,
    SENSITIVITY,
    NeighborSensitivity,
    WeightDiagnostics,
)
from cmfq.envs import GroupSpec
from cmfq.training.checkpoint import load_checkpoint
from cmfq.training.config import TrainConfig
from cmfq.training.trainer import train

SPEC = GroupSpec("red", (7, 7, 3), 6, 4, 3.0)
TINY = dict(map_size=12, max_steps=20, rounds=2, replay_rows=2000, save_every=1)


def test_means_over_agents_with_two_or_more_neighbours():
    neighbor_actions = torch.tensor([
        [0, 1, -1],   # two neighbours, proportional weights 3:1
        [2, 2, 3],    # three neighbours, uniform weights: the effects sum to 1e-7 nats
        [1, -1, -1],  # one neighbour: not counted, whatever its numbers
    ])
    weights = torch.tensor([[0.75, 0.25, 0.0], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    effects = torch.tensor([[0.3, 0.1, 0.0], [5e-8, 2e-8, 3e-8], [9.0, 0.0, 0.0]])
    weighted = torch.tensor([
        [0.75, 0.25, 0.0, 0.0], [0.0, 0.0, 2 / 3, 1 / 3], [0.0, 1.0, 0.0, 0.0],
    ])
    diagnostics = WeightDiagnostics()
    diagnostics.add(QValues(torch.zeros(3, 4), weighted, weights, effects), neighbor_actions)
    got = diagnostics.means()

    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert got["effect_sum"] == pytest.approx((0.4 + 1e-7) / 2)
    assert got["weight_entropy"] == pytest.approx((entropy + 1.0) / 2)
    assert got["mean_shift"] == pytest.approx((0.5 + 0.0) / 2)  # |(.75, .25) - (.5, .5)|_1 = .5
    assert got["uniform_fallback"] == pytest.approx(0.5)


def test_sums_run_over_every_decision_added():
    actions = torch.tensor([[0, 1]])
    weights = torch.tensor([[1.0, 0.0]])
    values = QValues(torch.zeros(1, 4), torch.tensor([[1.0, 0, 0, 0]]), weights, torch.ones(1, 2))
    uniform = QValues(torch.zeros(1, 4), torch.tensor([[0.5, 0.5, 0, 0]]),
                      torch.full((1, 2), 0.5), torch.ones(1, 2))
    diagnostics = WeightDiagnostics()
    diagnostics.add(values, actions)
    diagnostics.add(uniform, actions)
    assert diagnostics.means()["weight_entropy"] == pytest.approx(0.5)
    assert diagnostics.means()["mean_shift"] == pytest.approx(0.5)


def test_what_an_algorithm_does_not_have_is_nan():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    team = TeamInput(torch.rand(5, 7, 7, 3, generator=g), torch.rand(5, 6, generator=g),
                     torch.tensor([[1, 2, 3]] * 5), torch.randint(0, 4, (5, 3), generator=g))
    got = {}
    for name in ("mfq", "amfq", "cmfq"):
        diagnostics = WeightDiagnostics()
        diagnostics.add(make_algorithm(name, SPEC).q_values(team), team.neighbor_actions)
        got[name] = diagnostics.means()
    assert all(math.isnan(v) for v in got["mfq"].values())
    assert math.isnan(got["amfq"]["effect_sum"]) and math.isnan(got["amfq"]["uniform_fallback"])
    assert 0 < got["amfq"]["weight_entropy"] <= 1 and 0 <= got["amfq"]["mean_shift"] <= 2
    assert all(math.isfinite(v) for v in got["cmfq"].values())
    assert all(math.isnan(v) for v in WeightDiagnostics().means().values())


def _rows(run, drop=("steps_per_s", *DIAGNOSTICS, *SENSITIVITY)):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def _same_weights(a, b):
    wa, wb = load_checkpoint(a / "last.pt").model, load_checkpoint(b / "last.pt").model
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_cmfq_logs_its_diagnostics_and_measuring_them_changes_nothing(tmp_path, monkeypatch):
    config = dict(TINY, algo="cmfq", seed=5)
    measured = train(TrainConfig(out=str(tmp_path / "measured"), **config), progress=False)
    logged = [{k: float(row[k]) for k in DIAGNOSTICS} for row in _rows(measured, drop=())]
    assert all(row["effect_sum"] >= 0 and 0 <= row["weight_entropy"] <= 1 for row in logged)
    assert all(0 <= row["mean_shift"] <= 2 and 0 <= row["uniform_fallback"] <= 1 for row in logged)

    monkeypatch.setattr(WeightDiagnostics, "add", lambda self, values, actions: None)
    monkeypatch.setattr(NeighborSensitivity, "add", lambda self, team, x, rows: None)
    blind = train(TrainConfig(out=str(tmp_path / "blind"), **config), progress=False)
    assert all(v == "nan" for row in _rows(blind, drop=()) for k, v in row.items()
               if k in DIAGNOSTICS)
    assert _rows(measured) == _rows(blind)
    assert _same_weights(measured, blind)


def test_cmfq_with_uniform_weights_is_mfq(tmp_path):
    """The control: forcing the weights uniform leaves exactly MFQ, so that the weighting is the
    only difference between CMFQ and MFQ."""
    runs = {
        name: train(TrainConfig(out=str(tmp_path / name), seed=2, **TINY, **options),
                    progress=False)
        for name, options in (("mfq", {"algo": "mfq"}),
                              ("uniform", {"algo": "cmfq", "weighting": "uniform"}))
    }
    assert _rows(runs["mfq"]) == _rows(runs["uniform"])
    assert _same_weights(runs["mfq"], runs["uniform"])
    control = _rows(runs["uniform"], drop=())
    assert all(float(row["weight_entropy"]) == pytest.approx(1.0) for row in control)
    assert all(float(row["mean_shift"]) == 0.0 for row in control)


def test_sensitivity_is_the_kl_of_the_policy_when_the_neighbour_input_moves():
    """The measure by hand on a sample: every 8th row over the decisions added, KL at τ = 0.1
    to the uniform input and to the sample rolled by half; a network's own floor is itself."""
    torch.manual_seed(0)
    algo, fresh = make_algorithm("mfq", SPEC), make_algorithm("mfq", SPEC)
    g = torch.Generator().manual_seed(3)
    teams = [TeamInput(torch.rand(n, 7, 7, 3, generator=g), torch.rand(n, 6, generator=g),
                       torch.zeros(n, 1, dtype=torch.int64), torch.zeros(n, 1, dtype=torch.int64))
             for n in (13, 20)]
    inputs = [torch.softmax(torch.randn(t.view.shape[0], 4, generator=g) * 3, 1) for t in teams]
    sensitivity = NeighborSensitivity(algo, fresh)
    for t, x in zip(teams, inputs, strict=True):
        sensitivity.add(t, x, rows=t.view.shape[0])
    got = sensitivity.means()
    # The sample: rows 0 and 8 of the first decision (13 rows), then rows 3, 11 and 19 of the
    # second (its rows 13 + 3, ... are the 16th, ... row seen).
    view = torch.cat([teams[0].view[:9:8], teams[1].view[3::8]])
    features = torch.cat([teams[0].features[:9:8], teams[1].features[3::8]])
    x = torch.cat([inputs[0][:9:8], inputs[1][3::8]])
    assert x.shape[0] == 5

    def kl(net, other):
        emb = net.embed(view, features)
        logp = torch.log_softmax(net.head(emb, x).double() / 0.1, 1)
        logq = torch.log_softmax(net.head(emb, other).double() / 0.1, 1)
        return float((logp.exp() * (logp - logq)).sum(1).mean())

    with torch.no_grad():
        assert got["sensitivity"] == pytest.approx(kl(algo.net, torch.full_like(x, 0.25)))
        assert got["sensitivity_swap"] == pytest.approx(kl(algo.net, x.roll(2, 0)))
        assert got["sensitivity_floor"] == pytest.approx(kl(fresh.net, torch.full_like(x, 0.25)))
    assert got["sensitivity"] != got["sensitivity_floor"]
    assert all(math.isnan(v) for v in NeighborSensitivity(algo, fresh).means().values())


@pytest.mark.parametrize("algo", ["il", "cmfq"])
def test_every_run_logs_its_sensitivity_from_its_initial_level(tmp_path, algo):
    """Round 0 acts with the initial network: its sensitivity is its floor exactly. IL's
    neighbour input is always zero, so swapping it moves nothing."""
    run = train(TrainConfig(algo=algo, out=str(tmp_path / "run"), **TINY), progress=False)
    rows = [{k: float(row[k]) for k in SENSITIVITY} for row in _rows(run, drop=())]
    assert rows[0]["sensitivity"] == rows[0]["sensitivity_floor"] > 0
    assert rows[0]["sensitivity_swap"] == rows[0]["sensitivity_swap_floor"]
    assert all(math.isfinite(v) and v >= 0 for row in rows for v in row.values())
    if algo == "il":
        assert all(row["sensitivity_swap"] == 0 for row in rows)
