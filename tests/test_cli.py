"""The ``cmfq`` command as a user meets it: its version and its help texts."""

import re
import sys
from pathlib import Path

import pytest
import torch

import cmfq
from cmfq.cli import main

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "sweep", "tournament", "render", "plot")


def test_version_names_cmfq_torch_and_the_build(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"cmfq {cmfq.__version__} (torch {torch.__version__}, built ")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert cmfq.__version__ == pyproject["project"]["version"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_plain_text(command, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["cmfq"])
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main(["--help"] if command is None else [command, "--help"])
    text = capsys.readouterr().out
    assert "`" not in text, "RST markup shown as is"
    assert not re.search(r"%%|%\(", text), "a %-escape shown as is"


def test_evaluation_and_training_share_one_default_map(capsys):
    from cmfq.training.config import TrainConfig

    for command in ("tournament", "render"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"(default: {TrainConfig().map_size}, as in cmfq train)" in text, command
