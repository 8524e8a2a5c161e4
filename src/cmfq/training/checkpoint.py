"""Checkpoints: the network, its algorithm, env and config, written atomically, read safely.

A checkpoint is a ``torch.save`` of plain data (tensors, numbers, strings, dicts) and is read back
with ``torch.load(weights_only=True)``, so a file from elsewhere cannot run code when loaded.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cmfq import pretrained
from cmfq.algos import Algorithm, Policy, make_algorithm
from cmfq.envs import GridEnv, GroupSpec
from cmfq.training.config import TrainConfig, renamed
from cmfq.training.device import resolve_device

FORMAT = "cmfq-checkpoint-2"
OLD_FORMATS = ("cmfq-checkpoint-1",)
"""Formats still read: their configs are upgraded by ``_upgrade_config``."""


def atomic_save(obj: object, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a kill mid-write leaves
    the previous file intact, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path,
    algo: Algorithm,
    config: TrainConfig,
    *,
    group: str,
    round_index: int,
    training_state: dict | None = None,
) -> None:
    """Write ``algo``'s network with what is needed to rebuild it (and, to resume, the rest)."""
    spec = algo.spec
    atomic_save(
        {
            "format": FORMAT,
            "algo": algo.name,
            "env": config.env,
            "group": group,
            "round": round_index,
            "config": config.to_dict(),
            "spec": {
                "name": spec.name, "view_shape": list(spec.view_shape),
                "feature_dim": spec.feature_dim, "n_actions": spec.n_actions,
                "view_radius": spec.view_radius,
            },
            "model": algo.state_dict(),
            "training_state": training_state,
        },
        path,
    )


def store_half_precision(path: str | Path) -> None:
    """Rewrite the checkpoint at ``path`` with its network's floating-point tensors in float16:
    half the file, for checkpoints kept in a repository. ``build_algorithm`` rebuilds the network
    in float32 either way; float16's 11 significant bits move the Q values by about 1e-3 of
    their size. Raises ValueError for a checkpoint that can resume training (its optimizer and
    replay need full precision) or for a weight beyond float16's range."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("training_state") is not None:
        raise ValueError(f"{path} resumes training; only weights-only checkpoints are stored "
                         "in half precision")
    half = {}
    for name, tensor in data["model"].items():
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{path}: {name} does not fit in float16")
        half[name] = tensor
    atomic_save(data | {"model": half}, path)


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``build_algorithm()`` rebuilds the network, ``policy()`` acts with it.

    ``algo`` (name), ``env`` (name), ``config`` (the run's ``TrainConfig``), ``group`` (the group
    whose shapes it has; a battle learner plays both sides), ``spec`` (its observation and action
    shapes), ``round`` (rounds trained). ``env_settings()`` gives the env options its observations
    and rewards were made with (minimap, id embedding, rewards), for evaluations to reuse;
    ``check_fits`` refuses an env whose shapes differ.
    """

    path: Path
    algo: str
    env: str
    config: TrainConfig
    group: str
    spec: GroupSpec
    round: int
    model: dict = field(repr=False)
    training_state: dict | None = field(default=None, repr=False)

    def env_settings(self) -> dict:
        return self.config.env_settings()

    def fit(self, env: GridEnv, group: str | None = None) -> None:
        """Former name of ``check_fits``: it checks, it does not train."""
        warnings.warn("Checkpoint.fit is now Checkpoint.check_fits; the old name will go",
                      FutureWarning, stacklevel=2)
        self.check_fits(env, group)

    def check_fits(self, env: GridEnv, group: str | None = None) -> None:
        """Raise ValueError unless ``env``'s ``group`` (default: the checkpoint's) has the
        observation and action shapes this network was trained on."""
        if env.name != self.env:
            raise ValueError(f"{self.path} was trained on {self.env!r}, not {env.name!r}")
        theirs = env.specs[group or self.group]
        mine = (self.spec.view_shape, self.spec.feature_dim, self.spec.n_actions)
        given = (theirs.view_shape, theirs.feature_dim, theirs.n_actions)
        if mine != given:
            raise ValueError(
                f"{self.path} expects (view, features, actions) {mine}, but this {env.name} env "
                f"gives {given}; build it with the checkpoint's settings {self.env_settings()}"
            )

    def build_algorithm(self, device: str = "cpu") -> Algorithm:
        """The network on ``device`` (auto, cpu, cuda, cuda:N), whatever device it was saved on."""
        algo = make_algorithm(self.algo, self.spec, **self.config.algo_options())
        algo.load_state_dict(self.model)
        return algo.to(resolve_device(device)).eval()

    def policy(
        self,
        *,
        temperature: float | None = None,
        seed: int = 0,
        k_max: int | None = None,
        radius: float | None = None,
        device: str = "cpu",
    ) -> Policy:
        """The acting policy: Boltzmann at ``temperature`` (default: the config's
        ``eval_temperature``; 0 = greedy), with the training neighbourhoods (radius, k_max) unless
        given, on ``device``. It acts for any number of agents on any map of the same env and
        settings."""
        cfg = self.config
        if radius is None:
            radius = cfg.neighborhood_radius(self.spec.view_radius)
        return Policy(
            self.build_algorithm(device),
            temperature=cfg.eval_temperature if temperature is None else temperature,
            radius=radius,
            k_max=cfg.k_max if k_max is None else k_max,
            seed=seed,
        )


def load_checkpoint(path: str | Path, *, algo: str | None = None) -> Checkpoint:
    """Load a checkpoint written by ``cmfq train``, or a shipped one named ``pretrained:NAME``.

    Raises FileNotFoundError if ``path`` does not exist, ValueError if it is not a readable cmfq
    checkpoint (corrupt, truncated, or a file that would need code to unpickle), if ``algo`` is
    given and the checkpoint holds a different algorithm, or for an unknown pretrained name.
    """
    path = Path(pretrained.resolve(path))
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    damage = _damage(path)
    if damage:
        raise ValueError(f"{path} is not a readable cmfq checkpoint: {damage}")
    try:  # tensors land on the CPU whatever device saved them; build_algorithm moves them
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} is not a readable cmfq checkpoint: it holds objects that only code could "
            "rebuild, and checkpoints are loaded without running code (weights_only)") from err
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path} is not a readable cmfq checkpoint: {first}") from err
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, *OLD_FORMATS):
        raise ValueError(f"{path} is not a cmfq checkpoint (expected format {FORMAT!r})")
    if data["format"] in OLD_FORMATS:
        data["config"] = _upgrade_config(data["config"])
    # Fields renamed since the file was written keep their values under today's names.
    data["config"] = renamed(data["config"])
    if algo is not None and data["algo"] != algo:
        raise ValueError(
            f"{path} holds a {data['algo']!r} network, not {algo!r}; use --algo {data['algo']} "
            "or another checkpoint"
        )
    spec = data["spec"]
    return Checkpoint(
        path=path,
        algo=data["algo"],
        env=data["env"],
        config=TrainConfig.from_dict(data["config"]),
        group=data["group"],
        spec=GroupSpec(
            name=spec["name"], view_shape=tuple(spec["view_shape"]),
            feature_dim=spec["feature_dim"], n_actions=spec["n_actions"],
            view_radius=spec["view_radius"],
        ),
        round=data["round"],
        model=data["model"],
        training_state=data["training_state"],
    )


def _damage(path: Path) -> str | None:
    """What is wrong with the file at ``path`` as a zip archive (``torch.save``'s format), in a
    few words; None if it is whole. ``torch.load`` checks no checksum, so a damaged tensor would
    load silently, and for a damaged or foreign file it advises ``weights_only=False``, which is
    wrong. Reading the archive's checksums costs about a third of the load."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            zip_start = f.read(4) == b"PK\x03\x04"
        return (f"the file is truncated ({size} bytes, its zip archive has no end)" if zip_start
                else "it is not a file written by torch.save (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as bad:
        return f"the file is corrupt ({bad})"
    return None if broken is None else f"the file is corrupt ({broken} fails its checksum)"


def _upgrade_config(config: dict) -> dict:
    """A format-1 config in today's fields, meaning what it meant then: the env had no minimap
    and the id embedding, and ``double_q`` chose the target (else IL bootstrapped from the max,
    the others from the Boltzmann value)."""
    config = dict(config)
    double = config.pop("double_q", False)
    max_target = "max" if config.get("algo") == "il" else "boltzmann"
    config.setdefault("td_target", "double" if double else max_target)
    config.setdefault("minimap_mode", False)
    config.setdefault("id_embedding", True)
    config.setdefault("learn_from_opponent", False)
    return config

