"""torch.ops.cmfq.causal_weights as a custom op: schema, fake, autograd, compile; on each device,
in each formulation (per-agent kernels, stacked rows, the fused trunk on CUDA); and which
formulation a call takes."""

import os
import subprocess
import sys
import warnings

import pytest
import torch
from helpers import generic, make_head, make_inputs

import cmfq
from cmfq.op import entry


def op_args(head, state, actions, weighting="proportional"):
    """The op's arguments but the formulation."""
    return (
        state,
        actions,
        actions >= 0,
        *head.linear_layers(),
        0.3,
        weighting,
        0.5,
    )


@pytest.mark.parametrize("weighting", ["proportional", "softmax"])
def test_opcheck(device, weighting, formulation):
    head = make_head(dtype=torch.float32, device=device)
    state, actions = make_inputs(6, 4, head, device=device)
    state.requires_grad_()
    torch.library.opcheck(
        torch.ops.cmfq.causal_weights.default,
        (*op_args(head, state, actions, weighting), formulation),
    )


@pytest.mark.parametrize("weighting", ["proportional", "softmax"])
@pytest.mark.parametrize("distributions", [False, True])
def test_opcheck_backward(device, weighting, distributions, formulation):
    head = make_head(dtype=torch.float32, device=device)
    state, actions = make_inputs(6, 4, head, device=device)
    state, *layers, tau, weighting, tau_w = op_args(head, state, actions, weighting)
    mask = layers.pop(1)
    actions = layers.pop(0)
    if distributions:
        actions = torch.softmax(torch.randn(6, 4, head.n_actions), -1).to(device)
    layers = [[p.detach() for p in group] for group in layers]
    inputs = (state, actions, mask, *layers, tau, weighting, tau_w)
    weights, effects, _, causal_mean_action, q_causal = torch.ops.cmfq.causal_weights(
        *inputs, formulation
    )
    grads = [torch.randn_like(t) for t in (weights, effects, causal_mean_action, q_causal)]
    torch.library.opcheck(
        torch.ops.cmfq.causal_weights_backward.default,
        (*grads, *inputs, weights, effects, causal_mean_action, formulation),
    )


# 4 neighbour slots: with 3 actions the backward builds rows by action, with 6 by slot.
GRADCHECK_CASES = {
    "indices": dict(n_actions=3, action_hidden=(5,), hidden=(6,), distributions=False),
    "indices-more-actions-than-slots": dict(
        n_actions=6, action_hidden=(5,), hidden=(6,), distributions=False
    ),
    "distributions": dict(n_actions=3, action_hidden=(5,), hidden=(6, 4), distributions=True),
    "one-linear-head": dict(n_actions=3, action_hidden=(), hidden=(), distributions=False),
}


@pytest.mark.parametrize("case", GRADCHECK_CASES)
@pytest.mark.parametrize("weighting", ["proportional", "softmax"])
def test_gradcheck_float64(device, weighting, case, formulation):
    sizes = dict(GRADCHECK_CASES[case])
    distributions = sizes.pop("distributions")
    head = make_head(state_dim=4, **sizes, device=device)
    state, actions = make_inputs(3, 4, head, masked=0.25, device=device)
    mask = actions >= 0
    if distributions:
        actions = torch.softmax(2 * torch.randn(3, 4, head.n_actions, dtype=torch.float64), -1)
        actions = actions.to(device)
    groups = [[p.detach().clone() for p in g] for g in head.linear_layers()]
    sizes = [len(g) for g in groups]
    inputs = [state.requires_grad_()] + [p.requires_grad_() for g in groups for p in g]

    def causal_weights(state, *params):
        split, start = [], 0
        for size in sizes:
            split.append(list(params[start : start + size]))
            start += size
        out = torch.ops.cmfq.causal_weights(
            state, actions, mask, *split, 0.3, weighting, 0.5, formulation
        )
        return out[0], out[1], out[3], out[4]

    assert torch.autograd.gradcheck(causal_weights, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("slots", [8, 32])  # rows by slot, by action
def test_gradients_match_generic_path(device, slots, formulation):
    head = make_head(
        state_dim=288, n_actions=21, action_hidden=(64, 32), hidden=(128, 64), device=device
    )
    state, actions = make_inputs(16, slots, head, device=device)
    weights = torch.randn(16, slots, dtype=torch.float64).to(device)

    def grads(path):
        head.zero_grad()
        s = state.clone().requires_grad_()
        out = cmfq.causal_weights(head, s, actions, formulation=path)
        ((out.weights * weights).sum() + out.q_causal.square().sum()).backward()
        return [s.grad] + [p.grad.clone() for p in head.parameters()]

    for fused, reference in zip(grads(formulation), grads("generic")):
        torch.testing.assert_close(fused, reference, rtol=1e-6, atol=1e-10)


def test_double_backward_matches_generic_path():
    """create_graph=True takes the differentiable PyTorch backward, not the kernel."""
    head = make_head()
    state, actions = make_inputs(5, 4, head)

    def second_order(q):
        s = state.clone().requires_grad_()
        out = cmfq.causal_weights(q, s, actions, n_actions=head.n_actions)
        (grad,) = torch.autograd.grad(out.q_causal.square().sum(), s, create_graph=True)
        return torch.autograd.grad(grad.square().sum(), s)[0]

    torch.testing.assert_close(second_order(head), second_order(lambda s, x: head(s, x)))


def test_torch_compile_fullgraph_forward_and_backward(device, formulation):
    torch._dynamo.reset()
    head = make_head(dtype=torch.float32, device=device)
    state, actions = make_inputs(8, 5, head, device=device)

    def loss(state, actions):
        out = cmfq.causal_weights(head, state, actions, temperature=0.2, formulation=formulation)
        return out.q_causal.sum() + out.weights.square().sum(), out

    compiled = torch.compile(loss, fullgraph=True)
    s_eager = state.clone().requires_grad_()
    s_compiled = state.clone().requires_grad_()
    value, out = loss(s_eager, actions)
    value_compiled, out_compiled = compiled(s_compiled, actions)
    for name, a, b in zip(out._fields, out_compiled, out):
        torch.testing.assert_close(a, b, msg=name)
    value.backward()
    value_compiled.backward()
    torch.testing.assert_close(s_compiled.grad, s_eager.grad)


def test_cuda_tensors_on_cpu_only_build_take_the_generic_path_with_one_warning(monkeypatch):
    if cmfq.cuda_built():
        pytest.skip("this build has CUDA")
    # The op's CUDA slot explains itself to direct callers; cmfq.causal_weights never reaches it.
    assert "cmfq::causal_weights" in torch._C._dispatch_get_registrations_for_dispatch_key("CUDA")
    monkeypatch.setattr(entry, "_warned_cpu_only_build", False)
    cuda = torch.device("cuda")
    with pytest.warns(UserWarning, match="built without CUDA.*generic PyTorch path"):
        assert not entry._fused_kernel_takes(cuda, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not entry._fused_kernel_takes(cuda, torch.float32)
        assert entry._fused_kernel_takes(torch.device("cpu"), torch.float32)


@pytest.mark.skipif(cmfq.cuda_built() or not torch.cuda.is_available(),
                    reason="needs a GPU and a build without CUDA")
def test_cuda_tensors_on_cpu_only_build_give_the_cpu_numbers():
    head = make_head(device="cuda")
    state, actions = make_inputs(4, 3, head, device="cuda")
    out = cmfq.causal_weights(head, state, actions)
    expected = cmfq.causal_weights(head.cpu(), state.cpu(), actions.cpu())
    for name, a, b in zip(out._fields, out, expected):
        torch.testing.assert_close(a.cpu(), b, msg=name)


def test_auto_is_per_agent_on_the_cpu_and_on_cuda_by_batch():
    """Without CMFQ_STACKED or CMFQ_FUSED_TRUNK set (the environment is read once, at the first
    call: test_environment_overrides_auto checks the overrides in fresh interpreters)."""
    if os.environ.get("CMFQ_STACKED") or os.environ.get("CMFQ_FUSED_TRUNK"):
        pytest.skip("the environment overrides 'auto' in this run")
    small = cmfq._C.PER_AGENT_MAX_BATCH_CUDA
    for batch in (1, small, small + 1, 131072):
        assert cmfq._C.resolve_formulation("auto", cuda=False, batch=batch) == "per_agent"
    assert cmfq._C.resolve_formulation("auto", cuda=True, batch=small) == "per_agent"
    assert cmfq._C.resolve_formulation("auto", cuda=True, batch=small + 1) == "fused_trunk"
    for name in cmfq._C.FORMULATIONS:
        assert cmfq._C.resolve_formulation(name, cuda=True, batch=1) == name
    with pytest.raises(ValueError, match="formulation must be 'auto' or one of"):
        cmfq._C.resolve_formulation("kernel", cuda=False, batch=1)
    with pytest.raises(ValueError, match="runs on CUDA only"):
        cmfq._C.resolve_formulation("fused_trunk", cuda=False, batch=1)


@pytest.mark.parametrize(
    "environment, cpu, cuda",
    [
        ({"CMFQ_STACKED": "0"}, "per_agent", "per_agent per_agent"),
        ({"CMFQ_STACKED": "1"}, "stacked", "fused_trunk fused_trunk"),
        ({"CMFQ_STACKED": "1", "CMFQ_FUSED_TRUNK": "0"}, "stacked", "stacked stacked"),
        ({"CMFQ_FUSED_TRUNK": "0"}, "per_agent", "per_agent stacked"),
        ({"CMFQ_STACKED": "yes"}, "CMFQ_STACKED must be 0 or 1", None),
        # The tensor cores change how the fused trunk multiplies, not which formulation runs.
        ({"CMFQ_TRUNK_MMA": "1"}, "per_agent", "per_agent fused_trunk"),
        ({"CMFQ_TRUNK_MMA": "2"}, "CMFQ_TRUNK_MMA must be 0 or 1", None),
    ],
)
def test_environment_overrides_auto(environment, cpu, cuda):
    script = (
        "import cmfq\n"
        "try:\n"
        "    print(cmfq._C.resolve_formulation('auto', cuda=False, batch=64),\n"
        "          cmfq._C.resolve_formulation('auto', cuda=True, batch=64),\n"
        "          cmfq._C.resolve_formulation('auto', cuda=True, batch=16384))\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMFQ_")} | environment
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [cpu, *cuda.split()] if cuda else cpu in done.stdout


def test_which_formulation_names_the_path_a_call_takes():
    head = make_head()
    state, actions = make_inputs(4, 3, head)
    assert cmfq.which_formulation(head, state) == "per_agent"
    assert cmfq.which_formulation(head, state, "stacked") == "stacked"
    assert cmfq.which_formulation(head, state, "generic") == "generic"
    assert cmfq.which_formulation(generic(head), state) == "generic"
    with pytest.raises(ValueError, match="needs a cmfq.MeanFieldHead"):
        cmfq.causal_weights(generic(head), state, actions, n_actions=5, formulation="stacked")
    with pytest.raises(ValueError, match="formulation must be 'auto' or one of"):
        cmfq.causal_weights(head, state, actions, formulation="fast")
    # Whichever runs, the numbers agree.
    outputs = {f: cmfq.causal_weights(head, state, actions, formulation=f)
               for f in ("per_agent", "stacked", "generic")}
    for name in cmfq.CausalWeights._fields:
        torch.testing.assert_close(getattr(outputs["stacked"], name),
                                   getattr(outputs["per_agent"], name))
        torch.testing.assert_close(getattr(outputs["generic"], name),
                                   getattr(outputs["per_agent"], name))
