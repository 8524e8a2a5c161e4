"""The run configuration: one flat dataclass of option fields (each with its help and bounds),
composed of the options every run has and each env's and algorithm's own; TOML in and out."""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import tomli_w
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from cmfq.algos import ALGOS, TD_TARGETS, AMFQOptions, CMFQOptions, NetworkOptions
from cmfq.envs import BACKENDS, ENVS
from cmfq.envs.battle import BattleOptions
from cmfq.envs.consensus import ConsensusOptions
from cmfq.envs.games import TORCH_GAMES
from cmfq.envs.tiger_deer import TigerDeerOptions
from cmfq.options import check_bounds, option
from cmfq.training.device import check_device_name

RENAMED = {"envs": "games_per_round", "games": "games_per_round", "buffer_size": "replay_rows"}
"""Former field names -> today's: config files, sweep files and flags that use them still work,
with a one-line deprecation message (checkpoints are read without one). ``games`` went because
``cmfq tournament --games`` counts the games of a pairing: one word, one meaning."""


@dataclass
class RunOptions:
    """What every run sets, whatever its env and algorithm: the env's size, the algorithms'
    common options, the loop and the runtime."""

    algo: str = option("cmfq", "Algorithm: il, mfq, amfq or cmfq.", choices=tuple(ALGOS))
    env: str = option("battle", "Environment: battle, tiger-deer, or consensus (a lattice "
                     "game where only the neighbours carry the target).", choices=tuple(ENVS))
    env_backend: str = option(
        "magent2", "What plays battle and tiger-deer: magent2 (the reference engine, one game per "
        "env object on the CPU) or torch (all of a round's games as tensors on the run's device; "
        "the same rules, step for step, but its own random placements and attack orders, so not "
        "magent2's runs). Consensus is tensors either way and takes magent2.",
        choices=BACKENDS)
    map_size: int = option(
        20, "Side of the square map (battle: 0.04 * map_size^2 agents a side).", positive=True)
    max_steps: int | None = option(
        None, "Steps per round at most (None: the env's default, 400 for battle, 300 for "
        "tiger-deer, 25 for consensus).")
    minimap_mode: bool = option(
        True, "magent2's minimap: each team's density over the whole map as two view channels "
        "and the agent's position in the features, so agents find enemies beyond their view (the "
        "original MFQ battle's setting).")
    id_embedding: bool = option(
        False, "The agent's id in 10 binary features. Off: ids say nothing about the task, and a "
        "larger evaluation map gives ids never seen in training.")
    rounds: int = option(
        20, "Rounds to train; a round plays games_per_round games (episodes), then learns.",
        positive=True)
    games_per_round: int = option(
        1, "Games played in lockstep in each round, each with its own seed and drawn side; per "
        "step each network acts for its agents of all games in one batched forward. A GPU then "
        "gets batches worth its launch; on the CPU it amortises the Python overhead of a step. "
        "The games' data all feeds the one replay, so a round makes games_per_round times the "
        "gradient steps. (Formerly games, and envs before.)", positive=True)
    seed: int = option(
        0, "Seed of everything: network init, the env's placements, action sampling, replay "
        "draws.")
    label: str = option(
        "", "The run's name among runs that differ in more than the algorithm (a sweep's "
        "[variants] set it to the variant's name): group runs by it with --group-by label. "
        "Empty: none.")
    neighborhood: str = option(
        "local", "local: the k_max nearest live teammates within radius; global: the whole live "
        "team.", choices=("local", "global"))
    radius: float | None = option(None, "Neighbourhood radius in cells (None: the agents' view "
                                  "radius; 0: no neighbours).")
    k_max: int = option(32, "Most neighbours per agent (local neighbourhoods).", positive=True)
    gamma: float = option(0.95, "Discount factor.")
    lr: float = option(1e-4, "Adam learning rate.", positive=True)
    batch_size: int = option(64, "Transitions per gradient step.", positive=True)
    replay_rows: int = option(
        80_000, "Replay capacity in observation rows: one per agent and step, of every team "
        "recorded (on the torch backend one per slot and step, dead or alive, in whole steps). "
        "(Formerly buffer_size.)", positive=True)
    replay_ratio: float = option(
        1.0, "Gradient steps per round = replay_ratio * (transitions collected that round) / "
        "batch_size.")
    tau_target: float = option(
        0.005, "Soft target update: target <- (1 - tau) target + tau online, after each gradient "
        "step.")
    grad_clip: float = option(10.0, "Gradient-norm clip of each step.")
    td_target: str = option(
        "boltzmann", "V(s') of every algorithm's TD target: boltzmann (Σ_a π(a|s') Q'(s', a) at "
        "the current temperature, the mean-field value), max (max_a Q'), or double (Q' at "
        "argmax_a Q, the original MFQ code's). One setting for all, so that algorithms differ "
        "only in the neighbour input.", choices=TD_TARGETS)
    temperature_start: float = option(
        1.0, "Boltzmann temperature of the learner's actions in the first round; the mean-field "
        "value Σ π Q of the TD target uses the same (current) temperature.")
    temperature_end: float = option(0.1, "Boltzmann temperature after the decay.")
    temperature_decay_rounds: int | None = option(
        None, "Rounds of linear decay from start to end (None: 80% of rounds, fixed when the run "
        "starts).")
    eval_temperature: float = option(
        0.1, "Temperature of a checkpoint's acting policy in evaluation (0: greedy).")
    opponent: str = option(
        "self", "self: a frozen copy of the learner, synced every opponent_sync rounds; random; "
        "or a path to a checkpoint (of any algorithm) that stays fixed. In tiger-deer the deer "
        "act randomly.")
    opponent_sync: int = option(
        5, "Self-play: rounds between copies of the learner into the opponent.", positive=True)
    learn_from_opponent: bool = option(
        True, "Self-play: the opponent's transitions feed the replay too (the same network a few "
        "rounds old, so its data is as good as the learner's): twice the data per round for the "
        "same env steps, and with replay_ratio twice the gradient steps (see docs/training.md for "
        "what that buys per round and per second).")
    device: str = option(
        "auto", "Where the networks, batches and causal weights run: auto (CUDA when torch sees a "
        "GPU and cmfq was built with CUDA, else the CPU), cpu, cuda or cuda:N.")
    graph_step: bool | None = option(
        None, "CUDA only: capture a gradient step (sampling, forward, backward, clip, Adam, target "
        "update) once as a CUDA graph and replay it for each update (None: on for CUDA, off for "
        "the CPU, which has no graphs). On CUDA the replay is copied to the device and sampled "
        "there either way; see docs/performance.md.")
    train_dtype: str = option(
        "float32", "Arithmetic of training's convolutions and matrix products: float32, or "
        "bfloat16 under autocast, for the gradient step and for the state embedding when acting "
        "(the weights, their gradients, Adam, the target network, and when acting the head, the "
        "action values and the causal weights stay float32). On a CPU with AMX (Intel Xeon of "
        "the 4th generation on) it is faster (with compile_step about 1.6x a round); it rounds "
        "differently, so a run is not bit-identical to a float32 one (docs/training.md, Device). "
        "Evaluation is float32.",
        choices=("float32", "bfloat16"))
    compile_step: bool = option(
        False, "CPU only: make the gradient step (sampling, loss and gradient, clip, Adam, target "
        "update) one torch.compile graph, with batches drawn as on CUDA (so other draws than the "
        "default CPU sampler's). Faster per step, not bit-identical to the eager step; the first "
        "round pays the compilation (about a minute, a few seconds with inductor's cache warm). "
        "Needs a C++ compiler; see docs/training.md, Device.")
    threads: int = option(
        1, "CPU threads of torch (the networks and batches are small: more threads mostly "
        "contend).", positive=True)
    save_every: int = option(
        10, "Rounds between checkpoints (the last round is always saved).", positive=True)
    out: str = option("", "Run folder (empty: runs/<algo>-<env>).")


@dataclass
class TrainConfig(
    AMFQOptions, CMFQOptions, NetworkOptions, ConsensusOptions, TigerDeerOptions, BattleOptions,
    RunOptions,
):
    """Everything that defines a training run, as one flat set of fields (a TOML file's keys, the
    command line's flags): ``RunOptions``, then each env's and each algorithm's own options,
    declared beside the env or algorithm (``cmfq.envs.battle.BattleOptions``,
    ``cmfq.algos.cmfq.CMFQOptions``...). A new env or algorithm with options adds its dataclass
    to the bases. The defaults train a small battle in minutes."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        check_bounds(self)
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0 < self.tau_target <= 1:
            raise ValueError(f"tau_target must be in (0, 1], got {self.tau_target}")
        if self.radius is not None and self.radius < 0:
            raise ValueError(f"radius must be >= 0, got {self.radius}")
        if self.replay_ratio < 0:
            raise ValueError(f"replay_ratio must be >= 0, got {self.replay_ratio}")
        for name in ("temperature_start", "temperature_end", "eval_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_device_name(self.device)
        if self.env_backend == "torch" and self.env not in TORCH_GAMES:
            raise ValueError(f"env_backend torch plays {sorted(TORCH_GAMES)}, not {self.env!r}")
        if self.env_backend == "torch" and self.id_embedding:
            raise ValueError("env_backend torch has no id embedding; use env_backend magent2")
        if self.graph_step and self.device == "cpu":
            raise ValueError("graph_step needs a CUDA device; the CPU has no CUDA graphs")
        if self.compile_step and self.device.startswith("cuda"):
            raise ValueError("compile_step is for the CPU; on CUDA graph_step does its work")

    def resolved(self) -> TrainConfig:
        """A copy with the run-dependent defaults fixed, as it is saved beside the run."""
        decay = self.temperature_decay_rounds
        return dataclasses.replace(
            self,
            out=self.out or f"runs/{self.algo}-{self.env}",
            temperature_decay_rounds=self._default_decay() if decay is None else decay,
        )

    def graph_step_on(self, device: torch.device) -> bool:
        """Whether the run's gradient step is a CUDA graph on ``device`` (the resolved device)."""
        if self.graph_step and device.type != "cuda":
            raise ValueError(f"graph_step needs a CUDA device; this run trains on {device}")
        return device.type == "cuda" if self.graph_step is None else self.graph_step

    def compile_step_on(self, device: torch.device) -> bool:
        """Whether the run's gradient step is compiled on ``device`` (the resolved device)."""
        if self.compile_step and device.type != "cpu":
            raise ValueError(f"compile_step is for the CPU; this run trains on {device}")
        return self.compile_step

    def _default_decay(self) -> int:
        return max(1, math.ceil(0.8 * self.rounds))

    def temperature(self, round_index: int) -> float:
        """The learner's Boltzmann temperature in round ``round_index`` (linear decay)."""
        decay = self.temperature_decay_rounds or self._default_decay()
        frac = min(1.0, round_index / decay)
        return self.temperature_start + frac * (self.temperature_end - self.temperature_start)

    def neighborhood_radius(self, view_radius: float) -> float | None:
        """The radius of the agents' neighbourhoods, for agents that see ``view_radius`` cells:
        None (the whole team) for global neighbourhoods, else ``radius``, or ``view_radius``
        where it is None (0 is a radius: no neighbours)."""
        if self.neighborhood == "global":
            return None
        return view_radius if self.radius is None else self.radius

    def env_settings(self) -> dict:
        """The env options that shape what agents see and earn: an evaluation of this run's
        networks must build its env with them (map size and agent counts may change)."""
        names = ("minimap_mode", "id_embedding", *ENVS[self.env].options.SETTINGS)
        return {n: getattr(self, n) for n in names}

    def env_options(self) -> dict:
        """The options of ``cmfq.envs.make_env`` that this config sets."""
        names = ("max_steps", *(f.name for f in fields(ENVS[self.env].options)))
        sizes = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        return sizes | self.env_settings()

    def algo_options(self) -> dict:
        """The options of ``cmfq.algos.make_algorithm`` that this config sets."""
        own = ALGOS[self.algo].options
        names = ["gamma", "td_target", "neighbor_branch"]
        names += [f.name for f in fields(own)] if own else []
        return {n: getattr(self, n) for n in names}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a mapping; unknown keys are an error (a typo must not pass silently), a
        former name (``RENAMED``) works with a deprecation message."""
        for old in sorted(set(values) & set(RENAMED)):
            warnings.warn(f"{old!r} is now {RENAMED[old]!r} (config key, sweep key and --flag); "
                          "the old name will go", FutureWarning, stacklevel=2)
        values = renamed(values)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path, *, written_by_cmfq: bool = False) -> TrainConfig:
        """Read a config file; one that cmfq wrote (a run's ``config.toml``) may use former
        field names without a message: its user did not choose them."""
        with open(path, "rb") as f:
            values = tomllib.load(f)
        return cls.from_dict(renamed(values) if written_by_cmfq else values)

    def to_toml(self) -> str:
        """TOML text of the config (fields that are None are left out: they mean "default")."""
        values = {k: v for k, v in self.to_dict().items() if v is not None}
        header = "# cmfq train config; the fields are documented in docs/training.md\n"
        return header + tomli_w.dumps(values)


def renamed(values: dict) -> dict:
    """``values`` with former field names (``RENAMED``) replaced by today's."""
    names: dict[str, list[str]] = {}
    for key in values:
        names.setdefault(RENAMED.get(key, key), []).append(key)
    twice = {field: keys for field, keys in names.items() if len(keys) > 1}
    if twice:
        field, keys = sorted(twice.items())[0]
        raise ValueError(f"config sets {field!r} under several names: {sorted(keys)}")
    return {RENAMED.get(key, key): value for key, value in values.items()}
