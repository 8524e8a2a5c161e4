"""Evaluation of trained checkpoints: tournaments, tiger-deer scores, replays and learning curves.

``stats``, ``report``, ``figures``, ``curves``, ``frames`` and ``video`` need neither torch nor the
environments; ``match`` is the one module that plays games through ``cmfq.training``.
"""
