"""The run configuration: one dataclass, one docstring per field; TOML in and out."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
from dataclasses import dataclass, fields
from pathlib import Path

import tomli_w

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from cmfq.algos import ALGOS, TD_TARGETS
from cmfq.envs import ENVS
from cmfq.training.device import check_device_name

REWARD_FIELDS = ("step_reward", "dead_penalty", "attack_penalty", "attack_opponent_reward")
"""battle's reward terms (magent2's battle defaults)."""
TIGER_FIELDS = ("tiger_density", "deer_density", "tiger_step_recover", "tiger_attack_reward")
"""tiger-deer's settings: how crowded the map is, what tigers live on and what they earn."""


@dataclass
class TrainConfig:
    """Everything that defines a training run. The defaults train a small battle in minutes."""

    algo: str = "cmfq"
    """Algorithm: il, mfq, amfq or cmfq."""
    env: str = "battle"
    """Environment: battle or tiger-deer."""
    map_size: int = 20
    """Side of the square map (battle: 0.04 * map_size^2 agents a side)."""
    max_steps: int | None = None
    """Steps per round at most (None: the env's default, 400 for battle, 300 for tiger-deer)."""
    agents_per_side: int | None = None
    """battle only: agents a side (None: 0.04 * map_size^2)."""
    n_tigers: int | None = None
    """tiger-deer only: number of tigers (None: tiger_density * map_size^2, at least 2).
    Evaluation rebuilds the densities, not the counts."""
    n_deer: int | None = None
    """tiger-deer only: number of deer (None: deer_density * map_size^2)."""
    tiger_density: float = 0.01
    """tiger-deer only: tigers per cell when n_tigers is None (magent2's 0.01)."""
    deer_density: float = 0.05
    """tiger-deer only: deer per cell when n_deer is None (magent2's 0.05)."""
    tiger_step_recover: float = -0.1
    """tiger-deer only: HP a tiger gains each step. magent2's -0.1 starves a tiger (10 HP) that
    eats no deer in 100 steps; 0: tigers never starve."""
    tiger_attack_reward: float = 0.0
    """tiger-deer only: reward of a tiger for each attack on a deer, alone or not (shaping). 0:
    magent2's game, which pays a tiger only when two attack the same deer in the same step."""
    minimap_mode: bool = True
    """magent2's minimap: each team's density over the whole map as two view channels and the
    agent's position in the features, so agents find enemies beyond their view (the original MFQ
    battle's setting)."""
    id_embedding: bool = False
    """The agent's id in 10 binary features. Off: ids say nothing about the task, and a larger
    evaluation map gives ids never seen in training."""
    step_reward: float = -0.005
    """battle only: reward of every agent each step."""
    dead_penalty: float = -0.1
    """battle only: reward for dying."""
    attack_penalty: float = -0.1
    """battle only: reward for any attack (wasted ones included)."""
    attack_opponent_reward: float = 0.2
    """battle only: reward for attacking an enemy (a kill adds magent2's fixed +5)."""
    rounds: int = 20
    """Rounds to train; a round plays ``envs`` games (episodes), then learns."""
    envs: int = 1
    """Games played in lockstep in each round, each with its own seed and drawn side; per step
    each network acts for its agents of all games in one batched forward. A GPU then gets batches
    worth its launch; on the CPU it amortises the Python overhead of a step. The games' data all
    feeds the one replay, so a round makes ``envs`` times the gradient steps."""
    seed: int = 0
    """Seed of everything: network init, the env's placements, action sampling, replay draws."""
    neighborhood: str = "local"
    """local: the k_max nearest live teammates within radius; global: the whole live team."""
    radius: float | None = None
    """Neighbourhood radius in cells (None: the agents' view radius)."""
    k_max: int = 32
    """Most neighbours per agent (local neighbourhoods)."""
    gamma: float = 0.95
    """Discount factor."""
    lr: float = 1e-4
    """Adam learning rate."""
    batch_size: int = 64
    """Transitions per gradient step."""
    buffer_size: int = 80_000
    """Replay capacity in transitions."""
    replay_ratio: float = 1.0
    """Gradient steps per round = replay_ratio * (transitions collected that round) / batch_size."""
    tau_target: float = 0.005
    """Soft target update: target <- (1 - tau) target + tau online, after each gradient step."""
    grad_clip: float = 10.0
    """Gradient-norm clip of each step."""
    td_target: str = "boltzmann"
    """V(s') of every algorithm's TD target: boltzmann (Σ_a π(a|s') Q'(s', a) at the current
    temperature, the mean-field value), max (max_a Q'), or double (Q' at argmax_a Q, the original
    MFQ code's). One setting for all, so that algorithms differ only in the neighbour input."""
    temperature_start: float = 1.0
    """Boltzmann temperature of the learner's actions in the first round; the mean-field value
    Σ π Q of the TD target uses the same (current) temperature."""
    temperature_end: float = 0.1
    """Boltzmann temperature after the decay."""
    temperature_decay_rounds: int | None = None
    """Rounds of linear decay from start to end (None: 80% of rounds, fixed when the run starts)."""
    eval_temperature: float = 0.1
    """Temperature of a checkpoint's acting policy in evaluation (0: greedy)."""
    causal_temperature: float = 0.1
    """cmfq: temperature of the policies whose divergence is the causal effect."""
    weighting: str = "proportional"
    """cmfq: how causal effects become weights, proportional or softmax."""
    attention_dim: int = 64
    """amfq: width of the attention's queries and keys."""
    opponent: str = "self"
    """self: a frozen copy of the learner, synced every opponent_sync rounds; random; or a path
    to a checkpoint (of any algorithm) that stays fixed. In tiger-deer the deer act randomly."""
    opponent_sync: int = 5
    """Self-play: rounds between copies of the learner into the opponent."""
    learn_from_opponent: bool = True
    """Self-play: the opponent's transitions feed the replay too (the same network a few rounds
    old, so its data is as good as the learner's): twice the data per round for the same env
    steps, and with replay_ratio twice the gradient steps (see docs/training.md for what that
    buys per round and per second)."""
    device: str = "auto"
    """Where the networks, batches and causal weights run: auto (CUDA when torch sees a GPU and
    cmfq was built with CUDA, else the CPU), cpu, cuda or cuda:N."""
    threads: int = 1
    """CPU threads of torch (the networks and batches are small: more threads mostly contend)."""
    save_every: int = 10
    """Rounds between checkpoints (the last round is always saved)."""
    out: str = ""
    """Run folder (empty: runs/<algo>-<env>)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {sorted(ALGOS)}, got {self.algo!r}")
        if self.env not in ENVS:
            raise ValueError(f"env must be one of {sorted(ENVS)}, got {self.env!r}")
        if self.neighborhood not in ("local", "global"):
            raise ValueError(f"neighborhood must be local or global, got {self.neighborhood!r}")
        positive = {
            "map_size": self.map_size, "rounds": self.rounds, "envs": self.envs,
            "k_max": self.k_max,
            "lr": self.lr, "batch_size": self.batch_size, "buffer_size": self.buffer_size,
            "save_every": self.save_every, "threads": self.threads,
            "opponent_sync": self.opponent_sync,
            "causal_temperature": self.causal_temperature, "attention_dim": self.attention_dim,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0 < self.tau_target <= 1:
            raise ValueError(f"tau_target must be in (0, 1], got {self.tau_target}")
        if self.replay_ratio < 0:
            raise ValueError(f"replay_ratio must be >= 0, got {self.replay_ratio}")
        for name in ("temperature_start", "temperature_end", "eval_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.weighting not in ("proportional", "softmax"):
            raise ValueError(f"weighting must be proportional or softmax, got {self.weighting!r}")
        if self.td_target not in TD_TARGETS:
            raise ValueError(f"td_target must be one of {TD_TARGETS}, got {self.td_target!r}")
        check_device_name(self.device)

    def resolved(self) -> TrainConfig:
        """A copy with the run-dependent defaults fixed, as it is saved beside the run."""
        decay = self.temperature_decay_rounds
        return dataclasses.replace(
            self,
            out=self.out or f"runs/{self.algo}-{self.env}",
            temperature_decay_rounds=self._default_decay() if decay is None else decay,
        )

    def _default_decay(self) -> int:
        return max(1, math.ceil(0.8 * self.rounds))

    def temperature(self, round_index: int) -> float:
        """The learner's Boltzmann temperature in round ``round_index`` (linear decay)."""
        decay = self.temperature_decay_rounds or self._default_decay()
        frac = min(1.0, round_index / decay)
        return self.temperature_start + frac * (self.temperature_end - self.temperature_start)

    def env_settings(self) -> dict:
        """The env options that shape what agents see and earn: an evaluation of this run's
        networks must build its env with them (map size and agent counts may change)."""
        env_fields = {"battle": REWARD_FIELDS, "tiger-deer": TIGER_FIELDS}[self.env]
        names = ("minimap_mode", "id_embedding") + env_fields
        return {n: getattr(self, n) for n in names}

    def env_options(self) -> dict:
        """The options of ``cmfq.envs.make_env`` that this config sets."""
        names = {"battle": ("max_steps", "agents_per_side"),
                 "tiger-deer": ("max_steps", "n_tigers", "n_deer")}[self.env]
        sizes = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        return sizes | self.env_settings()

    def algo_options(self) -> dict:
        """The options of ``cmfq.algos.make_algorithm`` that this config sets."""
        options = {"gamma": self.gamma, "td_target": self.td_target}
        if self.algo == "cmfq":
            options |= {"causal_temperature": self.causal_temperature, "weighting": self.weighting}
        if self.algo == "amfq":
            options["attention_dim"] = self.attention_dim
        return options

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a mapping; unknown keys are an error (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        with open(path, "rb") as f:
            return cls.from_dict(tomllib.load(f))

    def to_toml(self) -> str:
        """TOML text of the config (fields that are None are left out: they mean "default")."""
        values = {k: v for k, v in self.to_dict().items() if v is not None}
        header = "# cmfq train config; the fields are documented in docs/training.md\n"
        return header + tomli_w.dumps(values)


def field_docs() -> dict[str, str]:
    """Each field's docstring, read from the source (used for the command line's help)."""
    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs
