"""The algorithms of the CMFQ comparison, one file each: ``il``, ``mfq``, ``amfq``, ``cmfq``.

All share ``QNetwork`` (state embedding + ``MeanFieldHead``) and differ only in the neighbour input
the head receives and in their TD target; see each module's docstring for its equation.
"""

from __future__ import annotations

from cmfq.algos.amfq import AMFQ, AMFQOptions
from cmfq.algos.cmfq import CMFQ, CMFQOptions
from cmfq.algos.common import TD_TARGETS, Algorithm, Batch, TeamInput
from cmfq.algos.il import IL
from cmfq.algos.mfq import MFQ
from cmfq.algos.network import NEIGHBOR_BRANCHES, NetworkOptions, QNetwork
from cmfq.algos.policy import Decision, GroupDecision, Policy, RandomPolicy

ALGOS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (IL, MFQ, AMFQ, CMFQ)}


def make_algorithm(name: str, spec, **options) -> Algorithm:
    """An algorithm by name for a group with ``spec`` (a ``cmfq.envs.GroupSpec``).

    ``options``: ``gamma``, ``td_target`` (one of ``TD_TARGETS``), ``neighbor_branch`` (one of
    ``NEIGHBOR_BRANCHES``, the network's, alike for every algorithm), and the fields of the
    algorithm's own options dataclass (``ALGOS[name].options``: ``CMFQOptions``, ``AMFQOptions``).
    """
    if name not in ALGOS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {sorted(ALGOS)}")
    return ALGOS[name](spec, **options)


__all__ = [
    "ALGOS",
    "AMFQ",
    "AMFQOptions",
    "Algorithm",
    "Batch",
    "CMFQ",
    "CMFQOptions",
    "Decision",
    "GroupDecision",
    "IL",
    "MFQ",
    "NEIGHBOR_BRANCHES",
    "NetworkOptions",
    "Policy",
    "QNetwork",
    "RandomPolicy",
    "TD_TARGETS",
    "TeamInput",
    "make_algorithm",
]
