"""``cmfq.envs.counter_rng``: SplitMix64 on int64 tensors. Its outputs are the published ones,
bit for bit (integer arithmetic, so exact); they are uniform over 16 bins and uncorrelated between
neighbouring counters and seeds, to within the sampling error of 10^5 draws."""

import math

import pytest
import torch
from helpers import splitmix64_reference

from cmfq.envs.counter_rng import as_int64, below, ranks, shift_right, splitmix64

N = 100_000


def unsigned(x: torch.Tensor) -> list[int]:
    return [int(v) % 2**64 for v in x]


def test_the_published_outputs():
    # Vigna's splitmix64.c seeded with 0, and Rosetta Code's "Pseudo-random numbers/Splitmix64"
    # seeded with 1234567: the first outputs
    assert unsigned(splitmix64(torch.tensor(0), torch.arange(3))) == [
        0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert unsigned(splitmix64(1234567, torch.arange(5))) == [
        6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
        16408922859458223821]


def test_any_seed_and_counter_as_the_python_reference(device):
    # seeds and counters over the whole 64-bit range (wrapping included), more than a vector's
    # worth, so that the CPU's vectorised loop and its tail both run
    g = torch.Generator().manual_seed(0)
    seeds = torch.randint(-2**63, 2**63 - 1, (1001,), generator=g)
    counters = torch.randint(-2**63, 2**63 - 1, (1001,), generator=g)
    counters[:10] = torch.arange(10)
    mine = splitmix64(seeds.to(device), counters.to(device)).cpu().tolist()
    assert mine == [splitmix64_reference(s, n) for s, n in zip(seeds.tolist(), counters.tolist())]
    # Python ints of any size are taken modulo 2^64
    assert int(splitmix64(2**64 - 1, torch.tensor(7))) == splitmix64_reference(-1, 7)
    assert as_int64([2**64 - 1, 2**63, 5]).tolist() == [-1, -2**63, 5]


def chi_square(bins: torch.Tensor, k: int) -> float:
    counts = torch.bincount(bins, minlength=k).double()
    expected = len(bins) / k
    return float(((counts - expected) ** 2 / expected).sum())


# chi-square with 15 degrees of freedom exceeds 37.70 with probability 0.001
CHI2_15_P001 = 37.70


@pytest.mark.parametrize("part", ["top", "bottom"])
def test_the_bits_are_uniform(part):
    bits = splitmix64(torch.tensor(20240917), torch.arange(N))
    nibble = shift_right(bits, 60) if part == "top" else bits & 15
    assert chi_square(nibble, 16) < CHI2_15_P001
    assert chi_square(below(bits, 16), 16) < CHI2_15_P001
    assert chi_square(below(bits, 6), 6) < 20.52  # 5 degrees of freedom, p = 0.001


def uniform(bits: torch.Tensor) -> torch.Tensor:
    return shift_right(bits, 11).double() * 2.0**-53


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_neighbouring_counters_and_seeds_are_uncorrelated():
    # The correlation of n independent pairs has a standard error of 1/sqrt(n); 4.5 of them.
    bound = 4.5 / math.sqrt(N - 1)
    counters = torch.arange(N + 1)
    u = uniform(splitmix64(torch.tensor(3), counters))
    assert abs(correlation(u[:-1], u[1:])) < bound
    seeds = torch.arange(N + 1)
    v = uniform(splitmix64(seeds, 0))
    assert abs(correlation(v[:-1], v[1:])) < bound
    # the chained levels: a stream's key, then neighbouring counters of neighbouring keys
    keys = splitmix64(splitmix64(seeds, 1), 0)
    w = uniform(splitmix64(keys[:, None], torch.arange(2)))
    assert abs(correlation(w[:, 0], w[:, 1])) < bound
    assert abs(correlation(w[:-1, 0], w[1:, 0])) < bound


def test_ranks_are_a_permutation_with_ties_by_position():
    bits = torch.tensor([[5, -3, 5, 0], [7, 7, 7, 7]])
    assert ranks(bits).tolist() == [[2, 0, 3, 1], [0, 1, 2, 3]]
    # of uniform words: every slot equally likely to come first (6 slots, 6,000 draws)
    first = ranks(splitmix64(torch.arange(6000)[:, None], torch.arange(6))).argmin(1)
    assert chi_square(first, 6) < 20.52
