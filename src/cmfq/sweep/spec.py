"""The sweep file: a base config, a grid of values, the resources of each run.

    config = "battle.toml"            # optional: a train config file (relative to this one)
    [base]                            # any TrainConfig field, the same for every run
    rounds = 2000
    [grid]                            # field -> values; every combination is one run
    algo = ["il", "mfq", "amfq", "cmfq"]
    seed = [0, 1, 2, 3, 4]
    [resources]                       # Ray resources of each run (fractions allowed)
    cpus_per_run = 1
    gpus_per_run = 0
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, fields
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from cmfq.training.config import RENAMED, TrainConfig

TABLES = ("base", "grid", "resources")


@dataclass(frozen=True)
class Resources:
    """What Ray reserves for each run, and how often it restarts a run whose worker died."""

    cpus_per_run: float = 1.0
    """CPUs reserved per run; keep it at least the runs' ``threads``."""
    gpus_per_run: float = 0.0
    """GPUs reserved per run; a fraction lets several runs share one GPU."""
    max_retries: int = 3
    """Times a run is started again (from its last checkpoint) after its worker process died."""

    def __post_init__(self) -> None:
        if not self.cpus_per_run > 0:
            raise ValueError(f"resources.cpus_per_run must be > 0, got {self.cpus_per_run}")
        if self.gpus_per_run < 0:
            raise ValueError(f"resources.gpus_per_run must be >= 0, got {self.gpus_per_run}")
        if self.max_retries < 0:
            raise ValueError(f"resources.max_retries must be >= 0, got {self.max_retries}")


@dataclass(frozen=True)
class Run:
    """One combination of the grid: its folder name, its grid values and its full config."""

    name: str
    values: dict
    config: TrainConfig


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: every combination of ``grid`` over ``base`` is one run."""

    base: dict
    """TrainConfig fields shared by all runs (the grid's values override them)."""
    grid: dict[str, list]
    """TrainConfig field -> the values it takes, in order."""
    resources: Resources

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepSpec:
        """Read a sweep file; every error names the key at fault."""
        path = Path(path)
        with open(path, "rb") as f:
            data = tomllib.load(f)
        unknown = sorted(set(data) - {"config", *TABLES})
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; a sweep file has config, "
                             f"[base], [grid] and [resources]")
        base, grid = data.get("base", {}), data.get("grid", {})
        both = sorted(set(base) & set(grid))
        if both:
            raise ValueError(f"{path}: {both} both in [base] and in [grid]; keep each in one")
        if "config" in data:  # its values come first, [base] and [grid] override them
            config_path = path.parent / data["config"]
            TrainConfig.from_toml(config_path)  # a bad file fails here, naming its key
            with open(config_path, "rb") as f:
                base = {k: v for k, v in tomllib.load(f).items() if k != "out"} | base
        known = {f.name for f in fields(Resources)}
        extra = sorted(set(data.get("resources", {})) - known)
        if extra:
            raise ValueError(f"{path}: unknown resources {extra}; known: {sorted(known)}")
        return cls(base, grid, Resources(**data.get("resources", {})))

    def __post_init__(self) -> None:
        # Former names (RENAMED) still work: TrainConfig says they are old.
        known = ({f.name for f in fields(TrainConfig)} | set(RENAMED)) - {"out"}
        for table, keys in (("base", self.base), ("grid", self.grid)):
            unknown = sorted(set(keys) - known)
            if unknown:
                raise ValueError(f"[{table}] has unknown keys {unknown} (the sweep sets out); "
                                 f"known keys: {sorted(known)}")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{key} must be a non-empty list of values, got {values!r}")

    def runs(self, out: Path) -> list[Run]:
        """Every combination of the grid, the first key varying slowest, each in its folder
        under ``out``."""
        runs = []
        for combination in itertools.product(*self.grid.values()):
            values = dict(zip(self.grid, combination))
            name = run_name(values)
            try:
                config = TrainConfig.from_dict(self.base | values | {"out": str(out / name)})
            except (TypeError, ValueError) as err:
                raise ValueError(f"run {name}: {err}") from err
            runs.append(Run(name, values, config))
        names = [run.name for run in runs]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(f"grid values give the same run folder names {clash}")
        return runs


def run_name(values: dict) -> str:
    """The folder name of a run: its grid values, ``algo=cmfq,seed=0`` (``run`` for an empty
    grid); characters other than letters, digits and ``.+-`` in a value become ``-``."""
    if not values:
        return "run"
    return ",".join(f"{key}={_slug(value)}" for key, value in values.items())


def value_text(value) -> str:
    """A grid value as a run's ``config.toml`` writes it (``true``, not ``True``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "-", value_text(value))
