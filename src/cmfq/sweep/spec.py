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
    runs_per_process = 1              # runs trained side by side in one process

Runs that differ in more than one field at a time are named variants: each ``[variants.NAME]``
table holds its fields, and the grid's ``variant`` key lists the names to combine (the run's
``label`` is its variant's name, so ``--group-by label`` groups the seeds of one variant):

    [grid]
    seed = [0, 1, 2]                  # the first key varies slowest: seed 0 of every variant first
    variant = ["mfq", "cmfq-relative"]
    [variants.mfq]
    algo = "mfq"
    [variants.cmfq-relative]
    algo = "cmfq"
    weighting = "relative"
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from cmfq.training.config import RENAMED, TrainConfig

TABLES = ("base", "grid", "resources", "variants")
VARIANT = "variant"
"""The grid key that picks a ``[variants]`` table."""


@dataclass(frozen=True)
class Resources:
    """What Ray reserves for each process of runs, how many runs a process trains side by side,
    and how often it restarts a process whose worker died."""

    cpus_per_run: float = 1.0
    """CPUs reserved per run (per process of ``runs_per_process`` runs, which share its
    threads); keep it at least the runs' ``threads``."""
    gpus_per_run: float = 0.0
    """GPUs reserved per run (per process, which its runs share); a fraction lets several
    processes share one GPU."""
    max_retries: int = 3
    """Times a run is started again (from its last checkpoint) after its worker process died."""
    runs_per_process: int = 1
    """Runs trained side by side in one process, their games in one batch
    (``cmfq.training.together``): runs that can share a batch, in grid order."""

    def __post_init__(self) -> None:
        if not self.cpus_per_run > 0:
            raise ValueError(f"resources.cpus_per_run must be > 0, got {self.cpus_per_run}")
        if self.gpus_per_run < 0:
            raise ValueError(f"resources.gpus_per_run must be >= 0, got {self.gpus_per_run}")
        if self.max_retries < 0:
            raise ValueError(f"resources.max_retries must be >= 0, got {self.max_retries}")
        if not isinstance(self.runs_per_process, int) or self.runs_per_process < 1:
            raise ValueError(f"resources.runs_per_process must be an integer >= 1, got "
                             f"{self.runs_per_process!r}")


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
    variants: dict[str, dict] = field(default_factory=dict)
    """Variant name -> the TrainConfig fields it sets (over ``base``, under the grid's other
    values); the grid's ``variant`` key lists the names to train."""

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepSpec:
        """Read a sweep file; every error names the key at fault."""
        path = Path(path)
        with open(path, "rb") as f:
            data = tomllib.load(f)
        unknown = sorted(set(data) - {"config", *TABLES})
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; a sweep file has config, "
                             f"[base], [grid], [resources] and [variants]")
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
        return cls(base, grid, Resources(**data.get("resources", {})), data.get("variants", {}))

    def __post_init__(self) -> None:
        # Former names (RENAMED) still work: TrainConfig says they are old.
        known = ({f.name for f in fields(TrainConfig)} | set(RENAMED)) - {"out"}
        tables = [("base", self.base), ("grid", {k: v for k, v in self.grid.items()
                                                 if k != VARIANT or not self.variants})]
        tables += [(f"variants.{name}", fields_) for name, fields_ in self.variants.items()]
        for table, keys in tables:
            unknown = sorted(set(keys) - known)
            if unknown:
                raise ValueError(f"[{table}] has unknown keys {unknown} (the sweep sets out); "
                                 f"known keys: {sorted(known)}")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{key} must be a non-empty list of values, got {values!r}")
        if self.variants:
            missing = sorted(set(self.grid.get(VARIANT, [])) - set(self.variants))
            if VARIANT not in self.grid or missing:
                not_names = f", not {missing}" if missing else ""
                raise ValueError(f"grid.variant must list names of [variants] "
                                 f"({sorted(self.variants)}){not_names}")
            for name, fields_ in self.variants.items():
                clash = sorted(set(fields_) & (set(self.grid) | {"label"}))
                if clash:
                    raise ValueError(f"[variants.{name}] sets {clash}, which the grid (or the "
                                     f"variant's name, label) sets")

    def runs(self, out: Path) -> list[Run]:
        """Every combination of the grid, the first key varying slowest, each in its folder
        under ``out``."""
        runs = []
        for combination in itertools.product(*self.grid.values()):
            values = dict(zip(self.grid, combination))
            name = run_name(values)
            fields_ = dict(values)
            if self.variants:
                variant = fields_.pop(VARIANT)
                fields_ = self.variants[variant] | fields_ | {"label": variant}
            try:
                config = TrainConfig.from_dict(self.base | fields_ | {"out": str(out / name)})
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
