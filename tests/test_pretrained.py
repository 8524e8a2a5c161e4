"""The pretrained-model loader, pointed at temporary folders, and the models the package ships."""

import pytest

from cmfq import pretrained
from cmfq.envs import make_env
from cmfq.training.checkpoint import load_checkpoint


def test_names_and_paths(tmp_path):
    for name in ("mfq-battle", "cmfq-battle"):
        (tmp_path / f"{name}.pt").write_bytes(b"x")
    (tmp_path / "notes.md").write_text("not a model")
    assert pretrained.names(tmp_path) == ["cmfq-battle", "mfq-battle"]
    assert pretrained.path("mfq-battle", tmp_path) == tmp_path / "mfq-battle.pt"
    assert pretrained.names(tmp_path / "missing") == []


def test_unknown_name_lists_the_available_ones(tmp_path):
    (tmp_path / "il-tiger-deer.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="'cmfq-battle'.*available: il-tiger-deer"):
        pretrained.path("cmfq-battle", tmp_path)
    with pytest.raises(ValueError, match="none are installed"):
        pretrained.path("cmfq-battle", tmp_path / "empty")


def test_resolve_only_touches_pretrained_references(tmp_path, monkeypatch):
    (tmp_path / "mfq-battle.pt").write_bytes(b"x")
    monkeypatch.setattr(pretrained, "MODELS_DIR", tmp_path)
    assert pretrained.resolve("pretrained:mfq-battle") == tmp_path / "mfq-battle.pt"
    assert pretrained.resolve("runs/a/last.pt") == "runs/a/last.pt"
    assert pretrained.resolve("random") == "random"
    with pytest.raises(ValueError, match="available: mfq-battle"):
        pretrained.resolve("pretrained:nope")


@pytest.mark.parametrize("name", pretrained.names())
def test_every_shipped_model_is_what_its_name_says_and_fits_its_game(name):
    checkpoint = load_checkpoint(f"{pretrained.PREFIX}{name}")
    algo, env = name.split("-", 1)
    assert (checkpoint.config.algo, checkpoint.config.env) == (algo, env)
    checkpoint.check_fits(make_env(env, checkpoint.config.map_size, seed=0))
