"""Are CMFQ's proportional weights signal or noise? Look inside one checkpoint.

    python experiments/ablations/inspect_weights.py CHECKPOINT [--map-size 20] [--seed 0]

Plays one battle round with the checkpoint on both sides (its acting policy), keeps every step's
team input of one side, and for the agents with at least two neighbours prints:

- the summed causal effect Σ_k c_ik (median and quartiles, nats) and the share at most 1e-6 nats;
- how far the float32 weights (the fused kernel, as in training) are from float64 ones (the same
  kernel in double precision): if the weights were rounding noise, they would differ;
- the weights' normalised entropy, largest weight over uniform, the L1 shift ǎ - ā, and the
  mean weight of a neighbour whose action is unique in the neighbourhood over that of one who
  shares it;
- the weights at causal_temperature 1 against those at 0.1 (the proportional rule is scale-free);
- KL(π(.|s, ā) ‖ π(.|s, ǎ)) at the acting temperature: how much the weighting changes the policy;
- the normalised entropy of softmax weights at several weight_temperatures.
"""

from __future__ import annotations

import argparse
import copy

import torch

from cmfq import causal_weights
from cmfq.algos.common import mean_action
from cmfq.envs import make_env
from cmfq.training.checkpoint import load_checkpoint
from cmfq.training.rollout import play_games

SOFTMAX_TEMPERATURES = (1e-6, 1e-5, 1e-4, 1e-3)


def record_teams(path: str, map_size: int, seed: int):
    """The checkpoint's network and the team inputs of its first side over one round."""
    ckpt = load_checkpoint(path)
    env = make_env("battle", map_size, seed=seed, **ckpt.env_settings())
    policies = [ckpt.policy(seed=seed + side) for side in (0, 1)]
    teams = []
    act = policies[0].algo.q_values
    policies[0].algo.q_values = lambda team: (teams.append(team), act(team))[1]
    play_games([env], [dict(zip(env.groups, policies, strict=True))], seeds=[seed])
    return ckpt, policies[0].algo, teams


def normalised_entropy(weights: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(weights, weights).sum(1) / count.log()


def _unique_over_shared(actions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per agent: the mean weight of the neighbours whose action no other neighbour took over
    that of the neighbours who share their action (NaN where either kind is missing)."""
    valid = actions >= 0
    same = (actions.unsqueeze(2) == actions.unsqueeze(1)) & valid.unsqueeze(1)
    unique = valid & (same.sum(2) == 1)
    shared = valid & ~unique
    mean_unique = (weights * unique).sum(1) / unique.sum(1)
    return mean_unique / ((weights * shared).sum(1) / shared.sum(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--map-size", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ckpt, algo, teams = record_teams(args.checkpoint, args.map_size, args.seed)
    tau = ckpt.config.causal_temperature
    head = algo.net.head
    head64 = copy.deepcopy(head).double()

    rows: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for team in teams:
            valid = team.neighbor_actions >= 0
            keep = valid.sum(1) >= 2
            if not keep.any():
                continue
            actions, count = team.neighbor_actions[keep], valid[keep].sum(1).double()
            emb = algo.net.embed(team.view[keep], team.features[keep])
            out = causal_weights(head, emb, actions, temperature=tau)
            out64 = causal_weights(head64, emb.double(), actions, temperature=tau)
            hot = causal_weights(head, emb, actions, temperature=1.0)
            plain = mean_action(actions, head.n_actions)
            policy = torch.log_softmax(head(emb, plain) / ckpt.config.eval_temperature, -1)
            causal = torch.log_softmax(out.q_causal / ckpt.config.eval_temperature, -1)
            stats = {
                "effect_sum": out.effects.sum(1).double(),
                "effect_sum_tau1": hot.effects.sum(1).double(),
                # NaN where every effect is 0 (all neighbours did the same): no ratio there.
                "effect_rel_err": ((out.effects.double() - out64.effects).abs().sum(1)
                                   / out64.effects.sum(1)),
                "weight_err_f32": (out.weights.double() - out64.weights).abs().max(1).values,
                "weight_entropy": normalised_entropy(out.weights.double(), count),
                "max_weight_x_uniform": out.weights.double().max(1).values * count,
                "mean_shift": (out.causal_mean_action - plain).abs().sum(1).double(),
                # The proportional rule without its fallback, at tau 1 against tau: the rule
                # is scale-free, so only the policies' shape at the two temperatures differs.
                "weight_diff_tau1": (hot.effects / hot.effects.sum(1, keepdim=True)
                                     - out.effects / out.effects.sum(1, keepdim=True)
                                     ).abs().max(1).values.double(),
                "unique_over_shared": _unique_over_shared(actions, out.weights.double()),
                "kl_policy_mean_vs_causal": (policy.exp() * (policy - causal)).sum(1).double(),
            }
            for t in SOFTMAX_TEMPERATURES:
                soft = causal_weights(head, emb, actions, temperature=tau, weighting="softmax",
                                      weight_temperature=t)
                stats[f"softmax_entropy_{t:g}"] = normalised_entropy(soft.weights.double(), count)
            for name, value in stats.items():
                rows.setdefault(name, []).append(value)

    values = {name: torch.cat(parts) for name, parts in rows.items()}
    n = values["effect_sum"].numel()
    print(f"{args.checkpoint}: round {ckpt.round}, causal_temperature {tau}, "
          f"{n} agent-steps with >= 2 neighbours over {len(teams)} decisions\n")
    print("| quantity | median | 25% | 75% | mean |\n|---|---:|---:|---:|---:|")
    for name, v in values.items():
        q = torch.nanquantile(v, torch.tensor([0.5, 0.25, 0.75], dtype=v.dtype)).tolist()
        print(f"| {name} | {q[0]:.3g} | {q[1]:.3g} | {q[2]:.3g} | {v.nanmean().item():.3g} |")
    print()
    for name in ("effect_sum", "effect_sum_tau1"):
        share = (values[name] <= 1e-6).double().mean().item()
        print(f"share of {name} <= 1e-6 nats (proportional falls back to uniform): {share:.3f}")
    undefined = values["effect_rel_err"].isnan().double().mean().item()
    print(f"effect_rel_err and weight_diff_tau1 leave out the {undefined:.3f} whose effects are "
          "all 0 (every neighbour did the same)")


if __name__ == "__main__":
    main()
