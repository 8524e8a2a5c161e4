"""Running a sweep on Ray: one task per run, each resuming whatever its folder holds; or, with
``runs_per_process`` above 1, one task per chunk of runs that train side by side
(``cmfq.training.together``).

A run's folder is the state of the sweep (``cmfq.training.run_folder`` has its rules): a finished
run is skipped, a run with a checkpoint resumes from it, a run killed before its first checkpoint
starts again from its saved config. A task whose worker process dies is started
again by Ray (``max_retries``) and so resumes too. Killing the sweep at any moment loses at most
the rounds since each run's last checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from cmfq.cluster import connect
from cmfq.sweep.spec import Resources, Run, SweepSpec, value_text
from cmfq.training.config import TrainConfig
from cmfq.training.run_folder import RunFolder
from cmfq.training.summary import write_summary
from cmfq.training.together import batch_settings, train_together

EXIT_AT_ROUND_VAR = "CMFQ_TEST_EXIT_AT_ROUND"
"""Test hook, read by the sweep's driver: each run's worker process exits right after writing
the checkpoint of this round, as if it had crashed, to test that Ray retries the run and that it
resumes (a run started from scratch would crash again there)."""


@dataclass
class SweepResult:
    summary: Path
    """The summary CSV (the Markdown table is beside it)."""
    finished: list[str]
    """The runs that are finished, in grid order."""
    trained: list[str]
    """The runs that this call trained or resumed and finished."""
    failed: dict[str, str]
    """Runs that did not finish, with the error."""


def run_sweep(
    spec: SweepSpec, out: str | Path, *, address: str | None = None, progress: bool = True,
) -> SweepResult:
    """Train every run of ``spec`` under ``out`` on Ray (see ``cmfq.cluster.connect``
    for ``address``) and write the summary; runs already finished are skipped."""
    out = Path(out)
    runs = spec.runs(out)
    for run in runs:
        RunFolder(run.config.out).check_config(run.config)
    todo = [run for run in runs if not is_finished(run)]

    failed = _train_on_ray(todo, runs, spec.resources, address, progress) if todo else {}
    finished = [run for run in runs if is_finished(run)]
    names = {run.name for run in finished}
    for run in todo:
        if run.name not in failed and run.name not in names:
            failed[run.name] = "the task ended before the last round"
    return SweepResult(
        summary=write_summary(out, {
            run.name: {key: value_text(value) for key, value in run.values.items()}
            for run in finished
        }),
        finished=[run.name for run in finished],
        trained=[run.name for run in todo if run.name not in failed],
        failed=failed,
    )


def _train_on_ray(
    todo: list[Run], runs: list[Run], resources: Resources, address: str | None, progress: bool,
) -> dict[str, str]:
    """Train the runs ``todo`` as Ray tasks, with bars over ``runs``; returns the failures."""
    ray = connect(address)
    task = ray.remote(train_runs).options(
        num_cpus=resources.cpus_per_run, num_gpus=resources.gpus_per_run,
        max_retries=resources.max_retries, retry_exceptions=False,
    )
    exit_at = os.environ.get(EXIT_AT_ROUND_VAR)
    exit_at = int(exit_at) if exit_at else None
    # The workers start in a folder of Ray's: a task with a relative run folder moves to the
    # driver's, so that the folder (and the ``out`` saved in its config) stays as it was given.
    here = os.getcwd()
    pending = {
        task.remote([run.config.to_dict() for run in chunk], here, exit_at): chunk
        for chunk in process_chunks(todo, resources.runs_per_process)
    }
    runs_bar = tqdm(total=len(runs), initial=len(runs) - len(todo), unit="run", desc="runs",
                    disable=not progress)
    rounds_bar = tqdm(total=sum(run.config.rounds for run in runs), unit="round",
                      desc="rounds", disable=not progress)
    failed = {}
    while pending:
        rounds_bar.n = _rounds_logged(runs)
        rounds_bar.refresh()
        done, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
        for ref in done:
            chunk = pending.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayError as err:
                failed |= dict.fromkeys((run.name for run in chunk),
                                        str(err).strip().splitlines()[-1])
            runs_bar.update(len(chunk))
    rounds_bar.n = _rounds_logged(runs)
    rounds_bar.close()
    runs_bar.close()
    return failed


def process_chunks(todo: list[Run], size: int) -> list[list[Run]]:
    """The runs ``todo`` in chunks of up to ``size`` runs that train side by side in one
    process: in grid order, each run joins the last chunk of the runs that share its batch
    (``together.batch_settings``) and the round it goes on from (``RunFolder.next_round``) while
    it has room. A run whose ``resume.pt`` cannot be read trains alone (its task says why)."""
    if size == 1:
        return [[run] for run in todo]
    chunks, latest = [], {}
    for run in todo:
        try:
            key = (*batch_settings(run.config).items(), RunFolder(run.config.out).next_round())
        except ValueError:
            key = run.name
        if key not in latest or len(latest[key]) == size:
            latest[key] = []
            chunks.append(latest[key])
        latest[key].append(run)
    return chunks


def train_runs(configs: list[dict], working_dir: str, exit_at_round: int | None = None) -> None:
    """Ray task: train the runs of ``configs`` side by side (``train_together``; one run as
    ``cmfq train`` would) to their last round, each resuming what its folder holds (relative
    folders are ``working_dir``'s).

    Runs that go on from different rounds train in turn, those of each round together: a worker
    killed while its runs wrote their checkpoints leaves some a checkpoint ahead of the others,
    and its retry must not fail for it."""
    configs = [TrainConfig.from_dict(config) for config in configs]
    if not all(Path(config.out).is_absolute() for config in configs):
        os.chdir(working_dir)

    def exit_if_asked(rounds_done: int) -> None:
        if rounds_done == exit_at_round:
            os._exit(1)

    hook = exit_if_asked if exit_at_round is not None else None
    by_round = {}
    for config in configs:
        # A lone run's resume.pt is left to resume_point, which says more of a damaged one.
        start = RunFolder(config.out).next_round() if len(configs) > 1 else 0
        by_round.setdefault(start, []).append(config)
    for start in sorted(by_round):
        train_together(by_round[start], progress=False, on_checkpoint=hook)


def is_finished(run: Run) -> bool:
    """Whether the run's folder holds its last round."""
    return RunFolder(run.config.out).is_finished(run.config.rounds)


def _rounds_logged(runs: list[Run]) -> int:
    """Rounds played by all ``runs``, each counted up to its last round."""
    return sum(min(RunFolder(run.config.out).rounds_logged(), run.config.rounds) for run in runs)
