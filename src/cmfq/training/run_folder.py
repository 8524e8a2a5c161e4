"""A training run's folder: the files it holds and what they say about the run.

    config.toml              the run's config, saved when it starts (or is resumed)
    metrics.csv              one row per round played (``cmfq.training.metrics``)
    tensorboard/             the same rows as TensorBoard scalars
    checkpoints/round_N.pt   the network after N rounds, every ``save_every`` rounds
    last.pt                  the network of the newest checkpoint (what evaluation loads)
    resume.pt                the newest checkpoint with the optimizer, target, opponent and replay

The folder is the run's state, so everything that asks "is this run finished, can it go on, from
where" asks this module: the trainer, a sweep, evaluation, the study and the benchmarks.

- *Finished* for ``rounds``: ``last.pt`` holds round ``rounds`` or later. Checkpoints are written
  ``resume.pt`` last, so once ``last.pt`` holds the final round the run is complete whatever
  became of ``resume.pt``.
- *Resumable*: ``resume.pt`` exists; the run goes on from it.
- *Started but never checkpointed*: ``config.toml`` and no ``resume.pt``; the run starts again
  from that config.
- A folder that holds a run (``resume.pt`` or ``metrics.csv``) is never trained afresh.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from cmfq.algos import Algorithm
from cmfq.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cmfq.training.config import TrainConfig

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.csv"
LAST_FILE = "last.pt"
RESUME_FILE = "resume.pt"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"


@dataclass
class RunFolder:
    """The folder of one training run (it need not exist yet)."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def last_file(self) -> Path:
        return self.path / LAST_FILE

    @property
    def resume_file(self) -> Path:
        return self.path / RESUME_FILE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    def checkpoint_file(self, rounds_done: int) -> Path:
        """The checkpoint kept of the network after ``rounds_done`` rounds."""
        return self.path / CHECKPOINTS_DIR / f"round_{rounds_done:05d}.pt"

    # -- what the folder says about the run -------------------------------------------------

    def holds_run(self) -> bool:
        """Whether a run has played here (a checkpoint or logged rounds): not to be overwritten."""
        return self.resume_file.exists() or self.metrics_file.exists()

    def is_started(self) -> bool:
        """Whether a run was started here: its config is saved (it may have no checkpoint)."""
        return self.config_file.is_file()

    def is_finished(self, rounds: int | None = None) -> bool:
        """Whether ``last.pt`` holds round ``rounds`` or a later one (default: the rounds of the
        config saved in it)."""
        if not self.last_file.is_file():
            return False
        last = load_checkpoint(self.last_file)
        return last.round >= (last.config.rounds if rounds is None else rounds)

    def next_round(self) -> int:
        """The round the run goes on from (``resume_point``'s): the next round of ``resume.pt``,
        0 without one. Cheap: the file is memory-mapped and only its round is read, not its
        replay. Raises ValueError for a ``resume.pt`` it cannot read."""
        if not self.resume_file.exists():
            return 0
        try:
            state = torch.load(self.resume_file, map_location="cpu", weights_only=True,
                               mmap=True)["training_state"]
            return int(state["next_round"])
        except Exception as err:  # what a damaged file raises varies; resume_point says more
            raise ValueError(f"{self.resume_file} says no round to go on from: {err}") from err

    def rounds_logged(self) -> int:
        """Rows of ``metrics.csv`` (0 without one): rounds played, checkpointed or not."""
        if not self.metrics_file.is_file():
            return 0
        with open(self.metrics_file, newline="") as f:
            return sum(1 for _ in csv.DictReader(f))

    def last_metrics(self) -> dict[str, str]:
        """The last row of ``metrics.csv`` as written."""
        with open(self.metrics_file, newline="") as f:
            *_, last = csv.DictReader(f)
        return last

    # -- the saved config -------------------------------------------------------------------

    def saved_config(self) -> TrainConfig:
        return TrainConfig.from_toml(self.config_file, written_by_cmfq=True)

    def save_config(self, config: TrainConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(config.to_toml())

    def check_config(self, config: TrainConfig) -> None:
        """Raise ValueError if the folder holds a run with other settings than ``config`` (its
        fields that are not None); ``out`` and ``rounds`` may differ: rounds may grow, the run
        then goes on. A folder without a saved config passes."""
        if not self.is_started():
            return
        saved = self.saved_config()
        differ = [
            f"{f.name}: {getattr(saved, f.name)!r} there, {getattr(config, f.name)!r} here"
            for f in dataclasses.fields(TrainConfig)
            if f.name not in ("out", "rounds") and getattr(config, f.name) is not None
            and getattr(config, f.name) != getattr(saved, f.name)
        ]
        if differ:
            raise ValueError(f"{self.path} holds a run with other settings "
                             f"({'; '.join(differ)}); move it away or choose another --out")

    # -- resuming and checkpointing ---------------------------------------------------------

    def resume_point(self) -> tuple[Checkpoint | None, TrainConfig]:
        """Where the run goes on: its ``resume.pt`` and the config saved in it, or, for a run
        stopped before its first checkpoint, no checkpoint and the saved ``config.toml``.

        Raises FileNotFoundError for a folder with neither, ValueError for a ``resume.pt``
        without training state."""
        if not self.resume_file.exists() and self.is_started():
            return None, self.saved_config()
        saved = load_checkpoint(self.resume_file)
        if saved.training_state is None:
            raise ValueError(f"{self.resume_file} holds no training state to resume from")
        return saved, saved.config

    def save_checkpoints(
        self, learner: Algorithm, config: TrainConfig, *, group: str, rounds_done: int,
        training_state: dict,
    ) -> None:
        """Write the round's checkpoint, ``last.pt`` and ``resume.pt``, in that order: a run
        stopped between these writes resumes from the previous ``resume.pt`` and redoes the same
        rounds, and a ``last.pt`` of the final round means finished (see the module's rules)."""
        for path in (self.checkpoint_file(rounds_done), self.last_file):
            save_checkpoint(path, learner, config, group=group, round_index=rounds_done)
        save_checkpoint(self.resume_file, learner, config, group=group, round_index=rounds_done,
                        training_state=training_state)
