"""Every CPU kernel variant this machine runs (default, AVX2, AVX-512) against the generic path."""

import platform
import re
import shutil
import subprocess

import pytest
import torch
from helpers import generic, make_head, make_inputs

import cmfq

VARIANTS = cmfq.cpu_capabilities()
OVERRIDE = "CMFQ_CPU_CAPABILITY"


def test_the_widest_variant_runs_by_default(monkeypatch):
    monkeypatch.delenv(OVERRIDE, raising=False)
    assert VARIANTS[0] == "default"
    assert cmfq.cpu_capability() == VARIANTS[-1]


def test_an_unknown_override_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv(OVERRIDE, "sse9")
    with pytest.raises(ValueError, match=rf"{OVERRIDE}=sse9 .*default"):
        cmfq.cpu_capability()


def outputs_and_grads(q, head, state, actions, mask, weighting):
    head.zero_grad()
    state = state.clone().requires_grad_()
    out = cmfq.causal_weights(
        q, state, actions, mask, temperature=0.1, weighting=weighting, n_actions=head.n_actions
    )
    cotangents = torch.Generator().manual_seed(3)
    loss = sum((o * torch.randn(o.shape, generator=cotangents)).sum() for o in out)
    loss.backward()
    return list(out), [state.grad] + [p.grad.clone() for p in head.parameters()]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("actions_kind", ["indices", "distributions"])
@pytest.mark.parametrize("weighting", ["proportional", "softmax"])
def test_variant_matches_generic(monkeypatch, variant, dtype, actions_kind, weighting):
    """Forward and backward; 70 agents (two chunks of the kernel), 23 actions (not a multiple
    of any vector width), temperature 0.1 so that many value changes take the exp branch."""
    monkeypatch.setenv(OVERRIDE, variant)
    assert cmfq.cpu_capability() == variant
    head = make_head(state_dim=30, n_actions=23, action_hidden=(17,), hidden=(40, 19))
    state, actions = make_inputs(70, 12, head)
    mask = actions >= 0
    if actions_kind == "distributions":
        logits = torch.randn(70, 12, 23, generator=torch.Generator().manual_seed(2))
        actions = torch.softmax(3 * logits, -1).double()
    reference = outputs_and_grads(generic(head), head, state, actions, mask, weighting)
    head = head.to(dtype)
    actions = actions.to(dtype) if actions.is_floating_point() else actions
    fused = outputs_and_grads(head, head, state.to(dtype), actions, mask, weighting)
    for kind, actual, expected in zip(("output", "gradient"), fused, reference):
        for i, (a, e) in enumerate(zip(actual, expected)):
            if dtype == torch.float32:
                # float32 against float64: relative L2 error, as the benchmarks check.
                error = (a.double() - e).norm() / e.norm().clamp_min(1e-30)
                assert error < 2e-4, f"{kind} {i}: relative L2 error {error:.2e}"
            else:
                message = lambda m, i=i, kind=kind: f"{kind} {i}: {m}"  # noqa: E731
                torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11, msg=message)


def test_only_the_wide_variants_use_wide_instructions():
    """The library runs on any x86-64 CPU: outside the AVX2 and AVX-512 variants' namespaces no
    function holds a VEX or EVEX instruction (v...), which an inline function of a shared header,
    compiled under a variant's target and kept by the linker, would bring."""
    objdump = shutil.which("objdump")
    if objdump is None or platform.machine() != "x86_64":
        pytest.skip("needs objdump and an x86-64 build")
    listing = subprocess.run(
        [objdump, "-d", "-C", "--no-show-raw-insn", cmfq._C.__file__],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    function, offenders, variant_functions = "", set(), set()
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not re.match(r"v[a-z0-9]+\b", fields[1].strip()):
            continue
        if "cpu_avx2::" in function or "cpu_avx512::" in function:
            variant_functions.add(function)
        else:
            offenders.add(function)
    assert variant_functions, "no vector instructions in the variants: were they compiled?"
    assert not offenders, sorted(offenders)[:10]
