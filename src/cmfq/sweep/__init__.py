"""Sweeps: every combination of a grid of training configs, as Ray tasks on this machine or a
cluster, resumable at any moment, with a summary table of the runs.

The floor above ``cmfq.training`` and ``cmfq.evaluation``; Ray is imported only when a sweep runs.
"""
