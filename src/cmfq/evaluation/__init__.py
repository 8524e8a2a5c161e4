"""Evaluation of trained checkpoints: tournaments, tiger-deer scores, replays and learning curves.

The submodules that need the environments (``tournament``, ``tiger_deer``, ``render``) import
them lazily, so the statistics, report writers and plots work on their own.
"""
