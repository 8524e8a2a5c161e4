"""The network's ``neighbor_branch``: the same architecture for every algorithm, recorded by the
checkpoint, so a saved network loads with its own; older checkpoints load as ``published``."""

import pytest
import torch

from cmfq.algos import ALGOS, NEIGHBOR_BRANCHES, make_algorithm
from cmfq.envs import GroupSpec
from cmfq.training.checkpoint import load_checkpoint, save_checkpoint
from cmfq.training.config import TrainConfig

SPEC = GroupSpec("red", (7, 7, 3), 6, 5, 3.0)


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_every_algorithm_builds_the_branch_it_is_given(algo):
    for branch, head_args in NEIGHBOR_BRANCHES.items():
        head = make_algorithm(algo, SPEC, neighbor_branch=branch).net.head
        assert head.action_hidden == head_args["action_hidden"]
        assert head.action_scale == head_args.get("action_scale", 1.0)
    assert make_algorithm(algo, SPEC).net.head.action_hidden == (64, 32)  # the published one
    with pytest.raises(ValueError, match="neighbor_branch must be one of"):
        make_algorithm(algo, SPEC, neighbor_branch="narrow")


def test_the_config_checks_and_passes_the_branch():
    assert TrainConfig().neighbor_branch == "published"
    assert TrainConfig(algo="mfq", neighbor_branch="direct").algo_options()["neighbor_branch"] == (
        "direct")
    with pytest.raises(ValueError, match="neighbor_branch must be one of"):
        TrainConfig(neighbor_branch="narrow")


@pytest.mark.parametrize("branch", ["direct", "wide", "counts"])
def test_a_checkpoint_loads_with_its_branch(tmp_path, branch):
    config = TrainConfig(algo="cmfq", neighbor_branch=branch)
    algo = make_algorithm("cmfq", SPEC, **config.algo_options())
    save_checkpoint(tmp_path / "net.pt", algo, config, group="red", round_index=1)
    loaded = load_checkpoint(tmp_path / "net.pt").build_algorithm()
    assert loaded.net.head.action_scale == algo.net.head.action_scale
    for name, value in algo.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)


def test_a_checkpoint_from_before_the_option_loads_as_published(tmp_path):
    algo = make_algorithm("mfq", SPEC)
    save_checkpoint(tmp_path / "net.pt", algo, TrainConfig(algo="mfq"), group="red",
                    round_index=1)
    saved = torch.load(tmp_path / "net.pt", weights_only=True)
    del saved["config"]["neighbor_branch"]  # as written before the option existed
    torch.save(saved, tmp_path / "old.pt")
    checkpoint = load_checkpoint(tmp_path / "old.pt")
    assert checkpoint.config.neighbor_branch == "published"
    assert checkpoint.build_algorithm().net.head.action_hidden == (64, 32)
