"""Counter-based random draws: SplitMix64 as int64 tensor arithmetic.

A draw is a function of its inputs, not of a generator's state: ``splitmix64(seed, n)`` is the
n-th output of SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
generators", 2014) seeded with ``seed``, computed directly as ``mix(seed + (n + 1) * GOLDEN)``.
So G games draw in one vectorised operation, each from its own seed and counters, and a game's
draws are the same whatever games it is drawn with. A tuple (seed, stream, counter, index) is
drawn by chaining: ``splitmix64(splitmix64(splitmix64(seed, stream), counter), index)``, each key
seeding the next level's sequence.

Everything is int64 arithmetic: additions and multiplications wrap around modulo 2^64 on every
device, and the right shifts are logical (torch's ``>>`` on int64 is arithmetic, so the bits the
sign brings in are masked off); the results are the same bits on the CPU and on CUDA. Constants
at or above 2^63 are written as the int64 of the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _int64(value: int) -> int:
    """The int64 with the same 64 bits as ``value`` (taken modulo 2^64)."""
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


GOLDEN = _int64(0x9E3779B97F4A7C15)
"""SplitMix64's increment: 2^64 over the golden ratio, odd."""
_MUL1 = _int64(0xBF58476D1CE4E5B9)
_MUL2 = _int64(0x94D049BB133111EB)


def shift_right(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x >> k`` as unsigned 64-bit words (zeros shifted in), for int64 ``x`` and 0 < k < 64."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(seed: torch.Tensor | int, n: torch.Tensor | int) -> torch.Tensor:
    """int64: output ``n`` (0, 1, ...) of SplitMix64 seeded with ``seed``, elementwise (the two
    broadcast; one of them a tensor). Its 64 bits are uniform and independent over ``n`` and over
    seeds (SplitMix64 passes BigCrush)."""
    step = _int64((n + 1) * GOLDEN) if isinstance(n, int) else (n + 1) * GOLDEN
    z = (_int64(seed) if isinstance(seed, int) else seed) + step
    z = (z ^ shift_right(z, 30)) * _MUL1
    z = (z ^ shift_right(z, 27)) * _MUL2
    return z ^ shift_right(z, 31)


def as_int64(seeds: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu"
             ) -> torch.Tensor:
    """int64 [len(seeds)] on ``device``: integer seeds of any size, each as the int64 of its
    bits modulo 2^64 (so 2^64 - 1 and -1 are the same seed)."""
    if isinstance(seeds, torch.Tensor):
        return seeds.to(device, torch.long)
    return torch.tensor([_int64(int(s)) for s in seeds], dtype=torch.long, device=device)


def below(bits: torch.Tensor, m: int) -> torch.Tensor:
    """int64 in [0, m) from uniform 64-bit words ``bits``: the top 63 bits modulo ``m`` (each
    value's probability is within m / 2^63 of 1 / m)."""
    return shift_right(bits, 1) % m


def ranks(bits: torch.Tensor) -> torch.Tensor:
    """int64, shape of ``bits`` [..., n]: each entry's rank (0 first) along the last dimension,
    sorted by ``bits`` as int64, equal words by position; of uniform words, a uniformly random
    permutation (two of n words are equal with probability below n^2 / 2^65)."""
    perm = bits.argsort(dim=-1, stable=True)
    positions = torch.arange(bits.shape[-1], device=bits.device).expand_as(perm)
    return torch.empty_like(perm).scatter_(-1, perm, positions)
