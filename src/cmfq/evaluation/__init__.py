"""Evaluation of trained checkpoints: tournaments, tiger-deer scores, replays and learning curves.

``stats``, ``report``, ``figures``, ``frames`` and ``video`` need neither torch nor the
environments; ``curves`` reads run folders through ``cmfq.training.run_folder``; ``match`` is the
one module that plays games through ``cmfq.training``.
"""
