"""The training loop: play a round, learn from the replay buffer, log, checkpoint. Top to bottom.

A round plays ``envs`` games in lockstep (one by default): each step, each network acts for its
agents of all the games in one batched forward, and each game's transitions are their own replay
streams. Self-play (battle): each game draws from its seed which side (the left or the right
block) the learner plays, so it never learns a one-sided prior; the opponent plays the other. With
``opponent = "self"`` that is a frozen copy of the learner, refreshed every ``opponent_sync``
rounds, whose transitions also feed the replay (``learn_from_opponent``); ``"random"`` plays a
uniformly random team; a checkpoint path plays that fixed network. In tiger-deer the learner plays
the tigers and the deer act randomly. Networks, batches and the causal weights run on
``device``; the env and the replay buffer stay on the CPU.

Every source of randomness of round r is seeded from (seed, r) (game j's from words 5j..5j+4 of
that seed sequence, see ``round_seeds``), so a run is reproducible on the same machine and a
resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from cmfq.algos import Algorithm, Policy, RandomPolicy, make_algorithm
from cmfq.algos.common import Batch
from cmfq.envs import make_env
from cmfq.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cmfq.training.config import TrainConfig
from cmfq.training.device import resolve_device
from cmfq.training.metrics import MetricsLog
from cmfq.training.replay import ReplayBuffer
from cmfq.training.rollout import RoundResult, play_rounds

RESUME_FILE = "resume.pt"
"""In the run folder: the last checkpoint plus optimizer, target, opponent and replay buffer."""
LAST_FILE = "last.pt"
"""In the run folder: the network of the last saved round (what evaluation loads)."""


def train(
    config: TrainConfig, *, progress: bool = True,
    on_checkpoint: Callable[[int], None] | None = None,
) -> Path:
    """Train a fresh run in ``config.out``; returns the run folder. ``on_checkpoint(rounds_done)``,
    if given, is called after each checkpoint is written."""
    config = config.resolved()
    run_dir = Path(config.out)
    if (run_dir / RESUME_FILE).exists() or (run_dir / "metrics.csv").exists():
        raise FileExistsError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(config.to_toml())
    return _run(config, run_dir, state=None, progress=progress, on_checkpoint=on_checkpoint)


def resume(
    run_dir: str | Path, *, rounds: int | None = None, progress: bool = True,
    on_checkpoint: Callable[[int], None] | None = None,
) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint, optionally to more ``rounds``.

    A run stopped before its first checkpoint starts again from the config saved beside it.
    """
    run_dir = Path(run_dir)
    if (run_dir / RESUME_FILE).exists() or not (run_dir / "config.toml").is_file():
        saved = load_checkpoint(run_dir / RESUME_FILE)
        if saved.training_state is None:
            raise ValueError(f"{run_dir / RESUME_FILE} holds no training state to resume from")
        config = saved.config
    else:
        saved, config = None, TrainConfig.from_toml(run_dir / "config.toml")
    config.out = str(run_dir)
    if rounds is not None:
        config.rounds = rounds
        config.validate()
    (run_dir / "config.toml").write_text(config.to_toml())
    return _run(config, run_dir, state=saved, progress=progress, on_checkpoint=on_checkpoint)


def _run(
    config: TrainConfig, run_dir: Path, *, state, progress: bool,
    on_checkpoint: Callable[[int], None] | None,
) -> Path:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    envs = [
        make_env(config.env, config.map_size, seed=config.seed, **config.env_options())
        for _ in range(config.envs)
    ]
    env = envs[0]  # what all games share: groups, shapes
    spec = env.specs[env.groups[0]]  # battle's sides share their shapes
    learner = make_algorithm(config.algo, spec, **config.algo_options()).to(device)
    target = copy.deepcopy(learner).requires_grad_(False)
    # The fused kernel updates all parameters in one pass: 7x faster than torch's per-tensor
    # default on the CPU, where that loop was a quarter of an update.
    optimizer = torch.optim.Adam(learner.parameters(), lr=config.lr, fused=True)
    replay = ReplayBuffer(config.buffer_size, spec.n_actions)
    radius = None if config.neighborhood == "global" else (config.radius or spec.view_radius)

    opponent = _opponent(config, env, learner)
    feed_opponent = isinstance(opponent, Algorithm) and config.learn_from_opponent
    start = 0
    if state is not None:
        learner.load_state_dict(state.model)
        target.load_state_dict(state.training_state["target"])
        optimizer.load_state_dict(state.training_state["optimizer"])
        replay.load_state_dict(state.training_state["replay"])
        if isinstance(opponent, Algorithm) and state.training_state["opponent"] is not None:
            opponent.load_state_dict(state.training_state["opponent"])
        start = state.training_state["next_round"]

    log = MetricsLog(run_dir, start_round=start)
    bar = tqdm(total=config.rounds, initial=start, unit="round", disable=not progress)
    for r in range(start, config.rounds):
        began = time.perf_counter()
        seeds = round_seeds(config.seed, r, config.envs)
        temperature = config.temperature(r)
        if isinstance(opponent, Algorithm) and r % config.opponent_sync == 0:
            opponent.load_state_dict(learner.state_dict())

        # 1. Play the round's games in lockstep, each on a side drawn from its seed, recording
        #    the learner's team (and in self-play the opponent's: the same network, a few rounds
        #    old). The networks' policies are shared by the games: one batched forward a step.
        learner_policy = Policy(learner, temperature=temperature, radius=radius,
                                k_max=config.k_max, seed=seeds[0].act)
        opponent_policy = _opponent_policy(config, opponent, temperature, radius,
                                           seed=seeds[0].opponent)
        sides = [game.side % 2 if config.env == "battle" else 0 for game in seeds]
        policies, record = [], []
        for game, side in zip(seeds, sides):
            group, other = env.groups[side], env.groups[1 - side]
            teams = {group: learner_policy}
            if config.env == "battle":
                random_team = RandomPolicy(env.specs[other].n_actions, seed=game.opponent)
                teams[other] = random_team if opponent_policy is None else opponent_policy
            policies.append(teams)
            record.append({group: replay, other: replay} if feed_opponent else {group: replay})
        added_before = replay.added
        results = play_rounds(envs, policies, seeds=[game.env for game in seeds], record=record)

        # 2. Learn: replay_ratio gradient steps per batch of new transitions.
        rng = np.random.default_rng(seeds[0].replay)
        new = replay.added - added_before
        n_updates = math.ceil(config.replay_ratio * new / config.batch_size)
        losses = []
        for _ in range(n_updates):
            batch = replay.sample(
                config.batch_size, rng, with_neighbors=learner.needs_neighbor_obs
            )
            loss = learner.loss(_to(batch, device), target, temperature)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(learner.parameters(), config.grad_clip)
            optimizer.step()
            with torch.no_grad():
                for p_target, p in zip(target.parameters(), learner.parameters(), strict=True):
                    p_target.lerp_(p, config.tau_target)
            losses.append(loss.item())

        # 3. Log: env steps summed over the games, the outcomes averaged over them, the weight
        #    diagnostics over the learner's decisions in all of them.
        outcomes = [_outcome(env, result, side) for result, side in zip(results, sides)]
        steps = sum(result.steps for result in results)
        row = {
            "round": r,
            "steps": steps,
            "temperature": temperature,
            **{name: float(np.mean([o[name] for o in outcomes])) for name in outcomes[0]},
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "updates": n_updates,
            "buffer": len(replay),
            "steps_per_s": steps / (time.perf_counter() - began),
            **learner_policy.diagnostics.means(),
        }
        log.log(row)
        bar.update(1)
        bar.set_postfix(
            steps_s=f"{row['steps_per_s']:.0f}", reward=f"{row['reward']:.2f}",
            kills=f"{row['kills']:.1f}", loss=f"{row['loss']:.4f}",
        )

        # 4. Checkpoint every save_every rounds and at the end.
        done = r + 1
        if done % config.save_every == 0 or done == config.rounds:
            training_state = {
                "target": target.state_dict(),
                "optimizer": optimizer.state_dict(),
                "replay": replay.state_dict(),
                "opponent": opponent.state_dict() if isinstance(opponent, Algorithm) else None,
                "next_round": done,
            }
            first = env.groups[0]
            # resume.pt last: a run stopped between these writes resumes from the previous
            # resume.pt and redoes the same rounds; once last.pt holds the final round, the run
            # is complete (what a sweep checks) whatever became of resume.pt.
            save_checkpoint(run_dir / "checkpoints" / f"round_{done:05d}.pt", learner, config,
                            group=first, round_index=done)
            save_checkpoint(run_dir / LAST_FILE, learner, config, group=first, round_index=done)
            save_checkpoint(run_dir / RESUME_FILE, learner, config, group=first,
                            round_index=done, training_state=training_state)
            if on_checkpoint is not None:
                on_checkpoint(done)
    bar.close()
    log.close()
    return run_dir


def _opponent(config: TrainConfig, env, learner: Algorithm) -> Algorithm | Checkpoint | None:
    """What the other side plays: a copy of the learner, a fixed checkpoint, or None (random)."""
    if config.env != "battle" or config.opponent == "random":
        return None
    if config.opponent == "self":
        return copy.deepcopy(learner).requires_grad_(False)
    saved = load_checkpoint(config.opponent)
    try:
        saved.fit(env)
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


def _outcome(env, result: RoundResult, side: int) -> dict[str, float]:
    """One game's metrics for the learner playing ``env.groups[side]``."""
    mine, theirs = result.groups[env.groups[side]], result.groups[env.groups[1 - side]]
    won = theirs.survivors == 0 if env.name == "tiger-deer" else mine.survivors > theirs.survivors
    return {
        "side": side,
        "reward": mine.reward / max(mine.initial, 1),
        "kills": mine.kills,
        "deaths": mine.initial - mine.survivors,
        "survivors": mine.survivors,
        "opponent_survivors": theirs.survivors,
        "win": float(won),
    }


def _to(batch: Batch, device: torch.device) -> Batch:
    """The batch on ``device``."""
    if device.type == "cpu":
        return batch
    return Batch(*(t.to(device, non_blocking=True) for t in batch))
