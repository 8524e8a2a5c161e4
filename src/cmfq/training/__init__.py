"""Training: the run config, replay buffer, rollouts, checkpoints and the ``cmfq train`` loop.

For evaluation code: ``cmfq.training.checkpoint.load_checkpoint(path)`` and
``cmfq.training.rollout.play_games(envs, policies, seeds=...)``.
"""
