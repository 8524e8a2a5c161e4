"""Where the CUDA kernel keeps each agent's workspace (csrc/cmfq/cuda/kernel_plan.h), checked on any
build: shared memory, opted in above 48 KB, or a global buffer when the device's limit is short."""

import pytest
from helpers import make_head

from cmfq import _C

H100 = dict(optin_shared_bytes=227 * 1024, sm_count=132)
KB = 1024


def plan(head_or_widths, *, batch=1000, slots=8, element_size=4, device=H100):
    """(workspace bytes, in shared, opted in, blocks) for a head or (A, encoder, H1, tail)."""
    if isinstance(head_or_widths, tuple):
        n_actions, encoder, first, tail = head_or_widths
    else:
        encoder_weights, _, trunk_weights, _ = head_or_widths.linear_layers()
        encoder = [weight.shape[0] for weight in encoder_weights]
        trunk = [weight.shape[0] for weight in trunk_weights]
        n_actions, first, tail = trunk[-1], trunk[0], trunk[1:]
    return _C._cuda_kernel_plan(
        batch, slots, n_actions, encoder, first, tail, element_size,
        device["optin_shared_bytes"], device["sm_count"],
    )


def test_workspace_layout_by_hand():
    # A=3, K=2, H=4, tail (3,), no encoder, so W = 4. float: x 3, proj 4, two W scratch 8,
    # layers 4+3, probs 3, effect max(A,K) 3, effects 2, weights 2, 4 warps x 2W = 32: 64 floats,
    # then 3 int counts: 268 bytes, rounded up to 272 for alignment.
    assert plan((3, [], 4, [3]), slots=2)[0] == 272
    assert plan((3, [], 4, [3]), slots=2, element_size=8)[0] == 64 * 8 + 3 * 4 + 4


def test_default_head_fits_in_default_shared_memory():
    head = make_head(state_dim=288, n_actions=21, action_hidden=(64, 32), hidden=(128, 64))
    workspace, in_shared, opt_in, blocks = plan(head, batch=1000)
    assert workspace <= 48 * KB and in_shared and not opt_in and blocks == 1000


def test_wider_head_opts_in_to_more_shared_memory():
    workspace, in_shared, opt_in, _ = plan((21, [64], 1024, [1024, 21]))
    assert 48 * KB < workspace <= 227 * KB and in_shared and opt_in


@pytest.mark.parametrize("element_size", [4, 8])
def test_head_too_wide_for_shared_memory_uses_global_workspaces(element_size):
    head = make_head(hidden=(8192,))
    workspace, in_shared, opt_in, blocks = plan(head, batch=100_000, element_size=element_size)
    assert workspace > 227 * KB and not in_shared and not opt_in
    assert blocks == 4 * H100["sm_count"]  # bounded: the buffer is blocks x workspace bytes


def test_a_smaller_device_limit_moves_the_workspace_out_of_shared_memory():
    widths = (21, [64], 1024, [1024, 21])
    small = dict(optin_shared_bytes=48 * KB, sm_count=10)
    assert plan(widths)[1] and not plan(widths, device=small)[1]


def test_batch_sizes_the_grid():
    widths = (5, [8], 16, [8, 5])
    assert plan(widths, batch=0)[3] == 0
    assert plan(widths, batch=3)[3] == 3
    assert plan(widths, batch=10**8)[3] == 1 << 20  # the blocks then stride over the agents
