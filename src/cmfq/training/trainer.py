"""The training loop: each round plans a run's games (``plan_games``), plays them, ``learn``s
from the replay buffer, logs a metrics row and checkpoints. Top to bottom.

Several runs can train side by side in one process (``cmfq.training.together``): each round, the
games of all of them play as one batch, then each run learns, logs and checkpoints as it would
alone; ``train`` and ``resume`` are the loop of one run (``run_rounds``).

A round plays ``games_per_round`` games in lockstep (default 1): each step, each network acts for
its agents of all the games in one batched forward, and each game's transitions are their own
replay streams. Self-play (battle): each game draws from its seed which side (the left or the right
block) the learner plays, so it never learns a one-sided prior; the opponent plays the other. With
``opponent = "self"`` that is a frozen copy of the learner, refreshed every ``opponent_sync``
rounds, whose transitions also feed the replay (``learn_from_opponent``); ``"random"`` plays a
uniformly random team; a checkpoint path plays that fixed network. In tiger-deer the learner plays
the tigers and the deer act randomly. Networks, batches and the causal weights run on ``device``;
so do the games on the torch backend (``env_backend``; magent2's are on the CPU). On the magent2
backend the policies decide on numpy rows (``rollout.play_games``) and the replay buffer stays on
the CPU (on CUDA, and with ``compile_step`` on the CPU, the ``Learner`` keeps a copy of the
replay on the device and samples it there); on the torch backend the whole data path is on
``device``: the policies decide on the games' tensors (``tensor_rollout.play_on_tensors``), the
replay is a ``SlotReplay`` there, and the ``Learner`` samples it where it is.

Every source of randomness of round r is seeded from (seed, r) (game j's from words 5j..5j+4 of
that seed sequence, see ``round_seeds``), so a run is reproducible on the same machine and a
resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from cmfq.algos import Algorithm, Policy, RandomPolicy, make_algorithm
from cmfq.envs import Games, make_games
from cmfq.training.checkpoint import Checkpoint, load_checkpoint
from cmfq.training.config import TrainConfig
from cmfq.training.device import resolve_device
from cmfq.training.learner import Learner
from cmfq.training.metrics import MetricsLog
from cmfq.training.replay import ReplayBuffer
from cmfq.training.rollout import GameResult, TeamPolicy, play_games
from cmfq.training.run_folder import RunFolder
from cmfq.training.slot_replay import SlotReplay
from cmfq.training.tensor_rollout import play_on_tensors


def train(
    config: TrainConfig, *, progress: bool = True,
    on_checkpoint: Callable[[int], None] | None = None,
) -> Path:
    """Train a fresh run in ``config.out``; returns the run folder. ``on_checkpoint(rounds_done)``,
    if given, is called after each checkpoint is written."""
    return run_rounds([fresh_start(config)], progress=progress, on_checkpoint=on_checkpoint)[0]


def resume(
    run_dir: str | Path, *, rounds: int | None = None, progress: bool = True,
    on_checkpoint: Callable[[int], None] | None = None,
) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint, optionally to more ``rounds``.

    A run stopped before its first checkpoint starts again from the config saved beside it.
    """
    return run_rounds([resumed_start(RunFolder(run_dir), rounds=rounds)], progress=progress,
                      on_checkpoint=on_checkpoint)[0]


class RunStart(NamedTuple):
    """Where a run begins or goes on: its config, its folder, and the ``resume.pt`` it goes on
    from (None: it starts at round 0)."""

    config: TrainConfig
    folder: RunFolder
    saved: Checkpoint | None

    @property
    def round(self) -> int:
        """The round it starts at."""
        return 0 if self.saved is None else self.saved.training_state["next_round"]


def fresh_start(config: TrainConfig) -> RunStart:
    """A fresh run of ``config`` (resolved) in ``config.out``; refuses a folder that holds a run.
    Writes nothing."""
    config = config.resolved()
    folder = RunFolder(config.out)
    if folder.holds_run():
        raise FileExistsError(f"{folder.path} already holds a run; continue it with "
                              f"--resume {folder.path} or choose --out")
    return RunStart(config, folder, None)


def resumed_start(folder: RunFolder, *, rounds: int | None = None) -> RunStart:
    """The run in ``folder`` going on from its last checkpoint (``RunFolder.resume_point``),
    to ``rounds`` if given. Writes nothing."""
    saved, config = folder.resume_point()
    config.out = str(folder.path)
    if rounds is not None:
        config.rounds = rounds
        config.validate()
    return RunStart(config, folder, saved)


def start_or_resume(config: TrainConfig) -> RunStart:
    """Where the run of ``config`` begins (a sweep's rule): a started run's folder goes on to
    ``config.rounds`` (its saved settings must be ``config``'s, ``RunFolder.check_config``), any
    other starts afresh. Writes nothing."""
    folder = RunFolder(config.resolved().out)
    if not folder.is_started():
        return fresh_start(config)
    folder.check_config(config)
    return resumed_start(folder, rounds=config.rounds)


@dataclass
class TrainingState:
    """What a run carries from round to round: the learner with its target network and optimizer
    (``learning``), the replay buffer (numpy on the magent2 backend, a ``SlotReplay`` on the
    torch backend's), the opponent (a network in self-play, a fixed checkpoint, or None), and
    the learner's initial network (``floor``)."""

    learning: Learner
    replay: ReplayBuffer | SlotReplay
    opponent: Algorithm | Checkpoint | None
    floor: Algorithm
    """The learner's network as it was initialised: the floor of its neighbour sensitivity.
    Rebuilt from the seed, not saved."""

    @property
    def learner(self) -> Algorithm:
        return self.learning.online

    @contextmanager
    def acting(self) -> Iterator[None]:
        """While the round's games play: the acting networks' weights do not change before the
        round's updates (``QNetwork.fixed_weights``)."""
        with ExitStack() as acting:
            for network in (self.learner, self.opponent):
                if isinstance(network, Algorithm):
                    acting.enter_context(network.net.fixed_weights())
            yield

    def state_dict(self, next_round: int) -> dict:
        """What ``resume.pt`` keeps of it (its ``training_state``) to go on at ``next_round``."""
        opponent = self.opponent
        return {
            **self.learning.state_dict(),  # target, optimizer
            "replay": self.replay.state_dict(),
            "opponent": opponent.state_dict() if isinstance(opponent, Algorithm) else None,
            "next_round": next_round,
        }

    def load_state_dict(self, saved: Checkpoint) -> int:
        """Restore a resumed run's state; returns the round to go on from."""
        state = saved.training_state
        self.learner.load_state_dict(saved.model)
        self.learning.load_state_dict(state)
        self.replay.load_state_dict(state["replay"])
        if isinstance(self.opponent, Algorithm) and state["opponent"] is not None:
            self.opponent.load_state_dict(state["opponent"])
        return state["next_round"]


def run_rounds(
    starts: Sequence[RunStart], *, progress: bool, on_checkpoint: Callable[[int], None] | None,
) -> list[Path]:
    """Train the runs of ``starts`` to their last round, side by side, and return their folders:
    each run's config is saved in its folder, then each round the games of every run play as one
    batch of ``Games`` (run k's are games kG..kG+G-1, G its ``games_per_round``), and each run
    learns, logs and checkpoints in its own folder. A run trains the same alone or among others.
    One run: ``train``, ``resume``; several: ``cmfq.training.together.train_together``, which
    checks that they share what makes their games one batch (``together.SHARED``) and their
    start round."""
    for start in starts:
        start.folder.save_config(start.config)
    first = starts[0].config
    torch.set_num_threads(first.threads)
    device = resolve_device(first.device)
    per_run = first.games_per_round
    games = make_games(first.env, first.map_size, per_run * len(starts),
                       backend=first.env_backend, seed=first.seed, device=device,
                       **first.env_options())
    runs = [RunState.begin(start, games, device) for start in starts]
    play = play_on_tensors if first.env_backend == "torch" else play_games

    bar = tqdm(total=first.rounds, initial=runs[0].start, unit="round", disable=not progress)
    for r in range(runs[0].start, first.rounds):
        began = time.perf_counter()
        plans = [run.plan_round(games, r) for run in runs]
        with ExitStack() as acting:
            for run in runs:
                acting.enter_context(run.training.acting())
            results = play(
                games, [teams for plan in plans for teams in plan.policies],
                seeds=[game.env for plan in plans for game in plan.seeds],
                record=[recorded for plan in plans for recorded in plan.record],
            )
        rows = [
            run.learn(games, plan, results[k * per_run:(k + 1) * per_run])
            for k, (run, plan) in enumerate(zip(runs, plans, strict=True))
        ]
        seconds = time.perf_counter() - began  # the batch's round: its play, every run's updates
        saved = [run.close_round(games, row, seconds) for run, row in zip(runs, rows, strict=True)]
        bar.update(1)
        bar.set_postfix(
            steps_s=f"{sum(row['steps'] for row in rows) / seconds:.0f}",
            reward=f"{np.mean([row['reward'] for row in rows]):.2f}",
            kills=f"{np.mean([row['kills'] for row in rows]):.1f}",
            loss=f"{np.mean([row['loss'] for row in rows]):.4f}",
        )
        if any(saved) and on_checkpoint is not None:
            on_checkpoint(r + 1)
    bar.close()
    for run in runs:
        run.log.close()
    return [start.folder.path for start in starts]


@dataclass
class RunState:
    """One run while it trains: its config, folder, state and metrics log, and the round it
    started at."""

    config: TrainConfig
    folder: RunFolder
    training: TrainingState
    start: int
    log: MetricsLog

    @classmethod
    def begin(cls, start: RunStart, games: Games, device: torch.device) -> RunState:
        """Build the run's networks, replay and opponent for ``games`` (restored from
        ``start.saved`` if given) and open its metrics log."""
        config = start.config
        torch.manual_seed(config.seed)  # the networks' initialisation, whatever ran before
        spec = games.specs[games.groups[0]]  # battle's sides share their shapes
        learner = make_algorithm(config.algo, spec, **config.algo_options()).to(device)
        dtype = getattr(torch, config.train_dtype)
        learner.net.embed_dtype = dtype  # acting; the self-play opponent and the target are copies
        floor = initial_network(config, spec, device)
        floor.net.embed_dtype = dtype
        compiled = config.compile_step_on(device)
        on_tensors = config.env_backend == "torch"
        training = TrainingState(
            learning=Learner(
                learner, lr=config.lr, grad_clip=config.grad_clip, tau_target=config.tau_target,
                batch_size=config.batch_size,
                device_sampling=device.type == "cuda" or compiled or on_tensors,
                graph_step=config.graph_step_on(device), step_dtype=dtype,
                compile_step=compiled,
            ),
            replay=(SlotReplay(config.replay_rows, spec.n_actions, games.device) if on_tensors
                    else ReplayBuffer(config.replay_rows, spec.n_actions)),
            opponent=_opponent(config, games, learner),
            floor=floor,
        )
        first = 0 if start.saved is None else training.load_state_dict(start.saved)
        return cls(config, start.folder, training, first,
                   MetricsLog(start.folder, start_round=first))

    def plan_round(self, games: Games, round_index: int) -> RoundPlan:
        """Round ``round_index``'s seeds and temperature, the opponent refreshed where due, and
        the plan of the run's games (``plan_games``)."""
        config, training = self.config, self.training
        seeds = round_seeds(config.seed, round_index, config.games_per_round)
        temperature = config.temperature(round_index)
        if isinstance(training.opponent, Algorithm) and round_index % config.opponent_sync == 0:
            training.opponent.load_state_dict(training.learner.state_dict())
        return plan_games(config, games, training, round_index, seeds, temperature)

    def learn(self, games: Games, plan: RoundPlan, results: list[GameResult]) -> dict:
        """After the run's games of ``plan`` were played (``results``): the round's updates;
        returns its row of ``metrics.csv`` but the speed (``close_round``)."""
        config, training = self.config, self.training
        new, diagnostics = plan.tally()
        n_updates = math.ceil(config.replay_ratio * new / config.batch_size)
        loss = training.learning.learn(
            training.replay, n_updates, np.random.default_rng(plan.seeds[0].replay),
            plan.temperature)
        return _metrics_row(games, plan.round_index, results, plan.sides, loss,
                            plan.temperature, n_updates, buffer=len(training.replay)
                            ) | diagnostics

    def close_round(self, games: Games, row: dict, seconds: float) -> bool:
        """Log the round's ``row`` with its speed (env steps over ``seconds``, the time of the
        round) and write the checkpoints where due; returns whether it wrote them."""
        row["steps_per_s"] = row["steps"] / seconds
        self.log.log(row)
        done = row["round"] + 1
        if done % self.config.save_every and done != self.config.rounds:
            return False
        self.folder.save_checkpoints(
            self.training.learner, self.config, group=games.groups[0], rounds_done=done,
            training_state=self.training.state_dict(next_round=done))
        return True


@dataclass
class RoundPlan:
    """A run's games of one round before they play: who plays each game (``policies``), where
    its transitions go (``record``), the side the learner plays, the seeds."""

    round_index: int
    seeds: list[GameSeeds]
    temperature: float
    sides: list[int]
    policies: list[dict[str, TeamPolicy]]
    record: list[dict[str, ReplayBuffer | SlotReplay]]
    learner_policy: Policy
    replay: ReplayBuffer | SlotReplay
    added_before: int
    """The replay's transitions before the games."""

    def tally(self) -> tuple[int, dict[str, float]]:
        """After the games: the transitions they added to the replay buffer, and the means of
        the learner's neighbour-weight diagnostics over its decisions and its neighbour
        sensitivity with its floor (``algos.diagnostics``)."""
        policy = self.learner_policy
        return (self.replay.added - self.added_before,
                policy.diagnostics.means() | policy.sensitivity.means())


def plan_games(
    config: TrainConfig, games: Games, training: TrainingState, round_index: int,
    seeds: list[GameSeeds], temperature: float,
) -> RoundPlan:
    """Who plays the run's games of the round, and what is recorded into its replay buffer.

    Each game draws the learner's side from its seed where the env's sides are alike (battle);
    the other side is the opponent, or random. The learner's team is recorded, and the
    opponent's too in self-play with ``learn_from_opponent`` (the same network, a few rounds
    old). The networks' policies are shared by the games: one batched forward a step.
    """
    radius = config.neighborhood_radius(games.specs[games.groups[0]].view_radius)
    feed_opponent = isinstance(training.opponent, Algorithm) and config.learn_from_opponent
    learner_policy = Policy(training.learner, temperature=temperature, radius=radius,
                            k_max=config.k_max, seed=seeds[0].act, measure_weights=True,
                            sensitivity_floor=training.floor)
    opponent_policy = _opponent_policy(config, training.opponent, temperature, radius,
                                       seed=seeds[0].opponent)
    sides = [game.side % 2 if games.symmetric else 0 for game in seeds]
    policies, record = [], []
    for game, side in zip(seeds, sides):
        group = games.groups[side]
        teams, recorded = {group: learner_policy}, {group: training.replay}
        if games.symmetric:
            other = games.groups[1 - side]
            random_team = RandomPolicy(games.specs[other].n_actions, seed=game.opponent)
            teams[other] = random_team if opponent_policy is None else opponent_policy
            if feed_opponent:
                recorded[other] = training.replay
        policies.append(teams)
        record.append(recorded)
    return RoundPlan(round_index, seeds, temperature, sides, policies, record, learner_policy,
                     training.replay, training.replay.added)


def _metrics_row(
    games: Games, round_index: int, results: list[GameResult], sides: list[int],
    loss: float, temperature: float, n_updates: int, *, buffer: int,
) -> dict:
    """The round's row of ``metrics.csv`` but its speed: env steps summed over the games, the
    outcomes averaged over them."""
    outcomes = [_outcome(games, result, side) for result, side in zip(results, sides)]
    steps = sum(result.steps for result in results)
    return {
        "round": round_index,
        "steps": steps,
        "temperature": temperature,
        **{name: float(np.mean([o[name] for o in outcomes])) for name in outcomes[0]},
        "loss": loss,
        "updates": n_updates,
        "buffer": buffer,
    }


def initial_network(config: TrainConfig, spec, device: torch.device) -> Algorithm:
    """The learner's network as ``run_rounds`` initialises it (the same seed, architecture and
    options), built without touching the run's random streams."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        initial = make_algorithm(config.algo, spec, **config.algo_options())
    return initial.to(device).requires_grad_(False)


def _opponent(
    config: TrainConfig, games: Games, learner: Algorithm,
) -> Algorithm | Checkpoint | None:
    """What the other side plays: a copy of the learner, a fixed checkpoint, or None (random)."""
    if not games.symmetric or config.opponent == "random":
        return None
    if config.opponent == "self":
        return copy.deepcopy(learner).requires_grad_(False)
    saved = load_checkpoint(config.opponent)
    try:
        saved.check_fits(games)
    except ValueError as err:
        raise ValueError(f"opponent checkpoint cannot play this run's env: {err}") from None
    return saved


def _opponent_policy(config, opponent, temperature, radius, *, seed) -> Policy | None:
    """The opponent network's policy, shared by the round's games; None for a random team."""
    if opponent is None:
        return None
    if isinstance(opponent, Checkpoint):
        return opponent.policy(seed=seed, device=config.device)
    return Policy(opponent, temperature=temperature, radius=radius, k_max=config.k_max, seed=seed)


class GameSeeds(NamedTuple):
    """The seeds of one game of a round."""

    env: int
    """The env's placements (and the random groups' actions)."""
    act: int
    """Game 0: the learner's action sampling (shared by the round's games)."""
    opponent: int
    """A random opponent's actions; game 0's also seeds the opponent network's sampling."""
    replay: int
    """Game 0: the round's replay draws."""
    side: int
    """Which side the learner plays (its parity: 0 left, 1 right)."""


def round_seeds(seed: int, round_index: int, games: int) -> list[GameSeeds]:
    """The seeds of each game of round ``round_index``: game j's are words 5j..5j+4 of
    ``SeedSequence([seed, round_index])``, so game 0's do not depend on ``games`` (one game a
    round plays exactly as before lockstep existed) and a resumed run replays them exactly."""
    words = np.random.SeedSequence([seed, round_index]).generate_state(5 * games)
    return [GameSeeds(*(int(w) for w in five)) for five in words.reshape(games, 5)]


def _outcome(games: Games, result: GameResult, side: int) -> dict[str, float]:
    """One game's metrics for the learner playing ``games.groups[side]``."""
    mine = result.groups[games.groups[side]]
    # An env of one group (consensus) has no opponent: nobody survives on the other side.
    theirs = result.groups[games.groups[1 - side]] if len(games.groups) > 1 else mine._replace(
        survivors=0)
    won = games.won(mine.survivors, theirs.survivors)
    return {
        "side": side,
        "reward": mine.reward / max(mine.initial, 1),
        "kills": mine.kills,
        "deaths": mine.initial - mine.survivors,
        "survivors": mine.survivors,
        "opponent_survivors": theirs.survivors,
        "win": float(won),
    }
