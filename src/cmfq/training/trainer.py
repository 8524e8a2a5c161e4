"""The training loop: each round ``collect``s games, ``learn``s from the replay buffer, logs a
metrics row and checkpoints. Top to bottom.

A round plays ``games_per_round`` games in lockstep (default 1): each step, each network acts for
its agents of all the games in one batched forward, and each game's transitions are their own
replay streams. Self-play (battle): each game draws from its seed which side (the left or the right
block) the learner plays, so it never learns a one-sided prior; the opponent plays the other. With
``opponent = "self"`` that is a frozen copy of the learner, refreshed every ``opponent_sync``
rounds, whose transitions also feed the replay (``learn_from_opponent``); ``"random"`` plays a
uniformly random team; a checkpoint path plays that fixed network. In tiger-deer the learner plays
the tigers and the deer act randomly. Networks, batches and the causal weights run on ``device``;
so do the games on the torch backend (``env_backend``; magent2's are on the CPU); the replay
buffer stays on the CPU (on CUDA, and with ``compile_step`` on the CPU, the ``Learner`` keeps a
copy of the replay on the device and samples it there).

Every source of randomness of round r is seeded from (seed, r) (game j's from words 5j..5j+4 of
that seed sequence, see ``round_seeds``), so a run is reproducible on the same machine and a
resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import ExitStack
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
from cmfq.training.rollout import GameResult, play_games
from cmfq.training.run_folder import RunFolder


def train(
    config: TrainConfig, *, progress: bool = True,
    on_checkpoint: Callable[[int], None] | None = None,
) -> Path:
    """Train a fresh run in ``config.out``; returns the run folder. ``on_checkpoint(rounds_done)``,
    if given, is called after each checkpoint is written."""
    config = config.resolved()
    folder = RunFolder(config.out)
    if folder.holds_run():
        raise FileExistsError(f"{folder.path} already holds a run; continue it with "
                              f"--resume {folder.path} or choose --out")
    folder.save_config(config)
    return _run(config, folder, saved=None, progress=progress, on_checkpoint=on_checkpoint)


def resume(
    run_dir: str | Path, *, rounds: int | None = None, progress: bool = True,
    on_checkpoint: Callable[[int], None] | None = None,
) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint, optionally to more ``rounds``.

    A run stopped before its first checkpoint starts again from the config saved beside it.
    """
    folder = RunFolder(run_dir)
    saved, config = folder.resume_point()
    config.out = str(folder.path)
    if rounds is not None:
        config.rounds = rounds
        config.validate()
    folder.save_config(config)
    return _run(config, folder, saved=saved, progress=progress, on_checkpoint=on_checkpoint)


@dataclass
class TrainingState:
    """What a run carries from round to round: the learner with its target network and optimizer
    (``learning``), the replay buffer, the opponent (a network in self-play, a fixed
    checkpoint, or None), and the learner's initial network (``floor``)."""

    learning: Learner
    replay: ReplayBuffer
    opponent: Algorithm | Checkpoint | None
    floor: Algorithm
    """The learner's network as it was initialised: the floor of its neighbour sensitivity.
    Rebuilt from the seed, not saved."""

    @property
    def learner(self) -> Algorithm:
        return self.learning.online

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


def _run(
    config: TrainConfig, folder: RunFolder, *, saved: Checkpoint | None, progress: bool,
    on_checkpoint: Callable[[int], None] | None,
) -> Path:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    games = make_games(config.env, config.map_size, config.games_per_round,
                       backend=config.env_backend, seed=config.seed, device=device,
                       **config.env_options())
    spec = games.specs[games.groups[0]]  # battle's sides share their shapes
    learner = make_algorithm(config.algo, spec, **config.algo_options()).to(device)
    dtype = getattr(torch, config.train_dtype)
    learner.net.embed_dtype = dtype  # acting; the self-play opponent and the target are copies
    floor = initial_network(config, spec, device)
    floor.net.embed_dtype = dtype
    compiled = config.compile_step_on(device)
    training = TrainingState(
        learning=Learner(
            learner, lr=config.lr, grad_clip=config.grad_clip, tau_target=config.tau_target,
            batch_size=config.batch_size,
            device_sampling=device.type == "cuda" or compiled,
            graph_step=config.graph_step_on(device), step_dtype=dtype, compile_step=compiled,
        ),
        replay=ReplayBuffer(config.replay_rows, spec.n_actions),
        opponent=_opponent(config, games, learner),
        floor=floor,
    )
    start = 0 if saved is None else training.load_state_dict(saved)

    log = MetricsLog(folder, start_round=start)
    bar = tqdm(total=config.rounds, initial=start, unit="round", disable=not progress)
    for r in range(start, config.rounds):
        began = time.perf_counter()
        seeds = round_seeds(config.seed, r, config.games_per_round)
        temperature = config.temperature(r)
        if isinstance(training.opponent, Algorithm) and r % config.opponent_sync == 0:
            training.opponent.load_state_dict(learner.state_dict())

        sides, results, new, diagnostics = collect(config, games, training, seeds, temperature)
        n_updates = math.ceil(config.replay_ratio * new / config.batch_size)
        loss = training.learning.learn(
            training.replay, n_updates, np.random.default_rng(seeds[0].replay), temperature)
        row = _metrics_row(games, r, results, sides, loss, temperature, n_updates,
                           buffer=len(training.replay), began=began) | diagnostics
        log.log(row)
        bar.update(1)
        bar.set_postfix(
            steps_s=f"{row['steps_per_s']:.0f}", reward=f"{row['reward']:.2f}",
            kills=f"{row['kills']:.1f}", loss=f"{row['loss']:.4f}",
        )

        done = r + 1
        if done % config.save_every == 0 or done == config.rounds:
            folder.save_checkpoints(learner, config, group=games.groups[0], rounds_done=done,
                                    training_state=training.state_dict(next_round=done))
            if on_checkpoint is not None:
                on_checkpoint(done)
    bar.close()
    log.close()
    return folder.path


def collect(
    config: TrainConfig, games: Games, training: TrainingState, seeds: list[GameSeeds],
    temperature: float,
) -> tuple[list[int], list[GameResult], int, dict[str, float]]:
    """Play the round's games in lockstep and record them into the replay buffer; returns the
    side the learner played in each game, the games' results, the transitions added and the
    means of the learner's neighbour-weight diagnostics over its decisions and its neighbour
    sensitivity with its floor (``algos.diagnostics``).

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
    added_before = training.replay.added
    with ExitStack() as acting:
        for network in (training.learner, training.opponent):
            if isinstance(network, Algorithm):  # no weight changes before the round's updates
                acting.enter_context(network.net.fixed_weights())
        results = play_games(games, policies, seeds=[game.env for game in seeds], record=record)
    added = training.replay.added - added_before
    measured = learner_policy.diagnostics.means() | learner_policy.sensitivity.means()
    return sides, results, added, measured


def _metrics_row(
    games: Games, round_index: int, results: list[GameResult], sides: list[int],
    loss: float, temperature: float, n_updates: int, *, buffer: int, began: float,
) -> dict:
    """The round's row of ``metrics.csv``: env steps summed over the games, the outcomes
    averaged over them."""
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
        "steps_per_s": steps / (time.perf_counter() - began),
    }


def initial_network(config: TrainConfig, spec, device: torch.device) -> Algorithm:
    """The learner's network as ``_run`` initialises it (the same seed, architecture and
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
