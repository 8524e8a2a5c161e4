"""benchmarks/env_speed.py with a checkpoint acting: a few steps on either backend, as a user
runs it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "env_speed.py"


def env_speed(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--threads", "1", "--games", "2", "--warmup", "1",
         "--steps", "3", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("backend", "game", "acting"), [
    ("torch", "battle", "red cmfq-battle.pt, blue cmfq-battle.pt"),
    ("magent2", "tiger-deer", "tiger cmfq-tiger-deer.pt, deer random"),
])
def test_a_pretrained_model_acts(backend, game, acting):
    done = env_speed("--backend", backend, "--game", game, "--map-size", "16",
                     "--policy", f"pretrained:cmfq-{game}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"acting: {acting}" in lines
    assert float(re.fullmatch(r"env steps/s: (\S+)", lines[-1]).group(1)) > 0


def test_a_checkpoint_that_fits_no_group_is_refused():
    done = env_speed("--backend", "torch", "--game", "tiger-deer", "--map-size", "16",
                     "--policy", "pretrained:cmfq-battle")
    assert done.returncode != 0 and "trained on 'battle', not 'tiger-deer'" in done.stderr
