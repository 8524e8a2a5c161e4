"""The examples run as a user would run them (a fresh interpreter, no arguments) and show what
they claim: the two paths agree, and the TD loss goes down."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_any_q_function_paths_agree():
    out = run_example("any_q_function.py")
    gaps = [float(g) for g in re.findall(r"^\S.*\)\s+([0-9.e+-]+)$", out, flags=re.MULTILINE)]
    assert len(gaps) == 6  # the five outputs and the gradient
    assert max(gaps) < 1e-4


def test_mfq_port_weights_give_the_ports_numbers():
    out = run_example("mfq_port_weights.py")
    gaps = [float(g) for g in re.findall(r"max \|difference\| (\S+)$", out, flags=re.MULTILINE)]
    assert len(gaps) == 6  # q_causal in float32, the op's five outputs in float64
    assert gaps[0] <= 1e-6 and max(gaps[1:]) <= 1e-12
    errors = re.findall(r"max \|error\| (\S+), (\S+)$", out, flags=re.MULTILINE)
    assert len(errors) == 5
    # In float32 the fused kernels are within 1e-6 of the port's exact numbers, and as accurate
    # as the port's own path, to a rounding.
    assert all(float(fused) <= min(1e-6, float(port) + 1e-7) for port, fused in errors)
    assert "a Tanh in the action branch: ValueError: MeanFieldHead.action_encoder[1]" in out


@pytest.mark.slow
def test_pettingzoo_battle_loss_goes_down():
    out = run_example("pettingzoo_battle.py")
    losses = re.search(r"TD loss: (\S+) at the first update, (\S+) over", out).groups()
    first, last = map(float, losses)
    assert last < first / 2
    weights = [float(w) for w in re.search(r"causal weights\s+\[(.*)\]", out).group(1).split(",")]
    assert min(weights) >= 0
    assert sum(weights) == pytest.approx(1.0, abs=0.01)  # rows sum to 1 (rounded to 3 digits)


def test_tensordict_policy_writes_the_outputs_and_reaches_the_head():
    out = run_example("tensordict_policy.py")
    for key in ("weights", "causal_mean_action", "q_causal", "action"):
        assert f"{key}:" in out
    assert "gradients reach the head" in out
