"""Deer caught by two hand-made tiger teams, the yardsticks of a tiger-deer setting.

- ``random``: every tiger acts uniformly at random (what an untrained learner does);
- ``hunter``: a tiger next to a deer attacks it, otherwise it steps towards the nearest deer.

Both play against random deer on the same seeded games. If the hunter catches deer and a random
team does not, the setting can be learned and a learner has room to show it.

    python experiments/tiger_deer_baselines.py --map-size 20 --tiger-density 0.05 \
        --deer-density 0.1 --tiger-step-recover 0 --tiger-attack-reward 0.1 --games 50
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from cmfq.envs import GridEnv, make_env

# magent2's tiger actions, read off the engine: moves and attacks by (dx, dy); 2 stays.
MOVES = {(0, -1): 0, (-1, 0): 1, (1, 0): 3, (0, 1): 4}
ATTACKS = {(0, -1): 5, (-1, 0): 6, (1, 0): 7, (0, 1): 8}


def hunter(env: GridEnv, rng: np.random.Generator) -> np.ndarray:
    """Each live tiger attacks a neighbouring deer, else steps towards the nearest deer (along x
    or y, drawn at random when both bring it closer)."""
    tigers, deer = env.positions("tiger"), env.positions("deer")
    actions = np.empty(len(tigers), dtype=np.int32)
    for i, tiger in enumerate(tigers):
        offsets = deer - tiger
        nearest = offsets[np.abs(offsets).sum(axis=1).argmin()]
        dx, dy = int(nearest[0]), int(nearest[1])
        if abs(dx) + abs(dy) == 1:
            actions[i] = ATTACKS[dx, dy]
            continue
        steps = ([(int(np.sign(dx)), 0)] if dx else []) + ([(0, int(np.sign(dy)))] if dy else [])
        actions[i] = MOVES[steps[rng.integers(len(steps))]]
    return actions


def play(env: GridEnv, team: str, seed: int) -> tuple[int, float]:
    """One round: the deer caught and the tigers' reward per tiger."""
    rng = np.random.default_rng(seed)
    env.reset(seed)
    deer_at_start, reward, done = env.num_alive("deer"), 0.0, False
    while not done:
        tigers = (hunter(env, rng) if team == "hunter"
                  else rng.integers(0, env.specs["tiger"].n_actions, env.num_alive("tiger")))
        deer = rng.integers(0, env.specs["deer"].n_actions, env.num_alive("deer"))
        result = env.step({"tiger": tigers, "deer": deer})
        reward += float(result.rewards["tiger"].sum())
        done = result.done
    return deer_at_start - env.num_alive("deer"), reward / env.n_tigers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map-size", type=int, default=30)
    parser.add_argument("--tiger-density", type=float, default=0.01)
    parser.add_argument("--deer-density", type=float, default=0.05)
    parser.add_argument("--tiger-step-recover", type=float, default=-0.1)
    parser.add_argument("--tiger-attack-reward", type=float, default=0.0)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--games", type=int, default=50)
    args = parser.parse_args()
    env = make_env("tiger-deer", args.map_size, seed=0, max_steps=args.max_steps,
                   tiger_density=args.tiger_density, deer_density=args.deer_density,
                   tiger_step_recover=args.tiger_step_recover,
                   tiger_attack_reward=args.tiger_attack_reward)
    print(f"{env.n_tigers} tigers, {env.n_deer} deer, map {args.map_size}, {args.games} games\n")
    print("| team | deer caught per game (sd) | tiger reward per tiger per game |")
    print("|---|---|---|")
    for team in ("random", "hunter"):
        caught, reward = zip(*(play(env, team, seed) for seed in range(args.games)), strict=True)
        print(f"| {team} | {statistics.mean(caught):.2f} ({statistics.pstdev(caught):.2f}) "
              f"| {statistics.mean(reward):.2f} |")


if __name__ == "__main__":
    main()
