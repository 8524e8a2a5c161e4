"""The benchmarked shapes (the default MFQ battle head, the batch and slot grids), without torch:
shared by the benchmarks and by ``report.py``."""

from __future__ import annotations

STATE_DIM = 288
N_ACTIONS = 21
ACTION_HIDDEN = (64, 32)
HIDDEN = (128, 64)
# A battle agent's view holds fewer neighbours than slots now and then: that share of slots is
# masked (action -1), as the environment pads them.
MASKED_FRACTION = 0.125

BATCHES = {"cpu": (64, 1024, 8192), "cuda": (1024, 16384, 131072)}
SLOTS = {"cpu": (8, 32), "cuda": (8, 32, 128)}
DTYPES = {"cpu": ("float32",), "cuda": ("float32", "bfloat16")}
MODES = ("forward", "forward+backward")
# The implementations compared (benchmarks/causal_impls.py): "fused" is the fused op's per-agent
# kernel, "stacked" its stacked formulation and "trunk" that with its trunk in one launch
# (formulation="fused_trunk", CUDA's default above 1024 agents), the last two measured on GPUs
# only (on the CPU, the per-agent kernel is the default and the faster).
IMPLS = {
    "cpu": ("fused", "generic", "compiled", "factored", "naive"),
    "cuda": ("fused", "stacked", "trunk", "generic", "compiled", "factored", "naive"),
}


def expected_distinct_actions(slots: int, n_actions: int = N_ACTIONS) -> float:
    """E[number of distinct valid actions of an agent] for uniform random actions: each slot
    independently holds a given action with probability (1 - masked) / A."""
    return n_actions * (1.0 - (1.0 - (1.0 - MASKED_FRACTION) / n_actions) ** slots)
