"""Sweeps: every combination of a grid of training configs, as Ray tasks on this machine or a
cluster, resumable at any moment, with a summary table of the runs.

A peer of ``cmfq.evaluation`` above ``cmfq.training``; Ray (``cmfq.cluster``) is imported only
when a sweep runs.
"""
