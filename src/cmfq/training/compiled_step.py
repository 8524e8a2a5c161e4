"""The gradient step as one compiled graph (``compile_step``, the CPU's counterpart of the CUDA
graph): sampling the device replay, the TD loss and its gradient, the gradient-norm clip, Adam,
the soft target update and the loss sum, all in one ``torch.compile`` (inductor) graph per kind
of TD temperature.

Why one graph: on the CPU the convolutions and matrix products of a step run near the core's
peak, and what is left is memory traffic over the 0.7 M parameters (the gradient, its clip, Adam,
the target's lerp, each a pass of its own when eager). Taking the gradient with ``torch.func``
instead of ``backward`` puts the whole step in reach of the compiler, which fuses those passes into
one per parameter. With ``dtype`` bfloat16 both networks' forwards read bfloat16 copies of the
weights that the update writes in that same pass (no casts in the forward, no float32 gradient
to store), the rest as ``torch.autocast`` does it; the master weights, Adam's moments and the
target stay float32.

The update is Adam's (``torch.optim.Adam``'s formula, no weight decay, no amsgrad) on the
optimizer's own state tensors, so a checkpoint is the same whichever step wrote it. Its scalars
(the step size lr / (1 - beta1^t) and 1 / sqrt(1 - beta2^t)) come from the host, filled in before
each step: computed in the graph, inductor fuses their ``pow`` and divisions into the loop over
the parameters, once per vector of it (the loop cannot hoist what its stores might alias), where
they cost about a quarter of the step. The learner runs the steps with subnormals flushed to zero,
as it runs every CPU update (``cmfq.training.learner``).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from cmfq.algos import Algorithm
from cmfq.training.device_replay import DeviceReplay


class _OnlineAndTarget(nn.Module):
    """The loss as a module of both networks, so ``functional_call`` can swap in their weights."""

    def __init__(self, online: Algorithm, target: Algorithm) -> None:
        super().__init__()
        self.online = online
        self.target = target

    def forward(self, batch, temperature: float | torch.Tensor) -> torch.Tensor:
        return self.online.loss(batch, self.target, temperature)


class CompiledStep:
    """Makes ``Learner``'s update on ``online``, ``target`` and ``optimizer``'s state as one
    compiled graph; call ``sync`` before a run of steps (it gathers the tensors the step updates
    and refreshes the low-precision weight copies)."""

    def __init__(
        self, online: Algorithm, target: Algorithm, optimizer: torch.optim.Adam, *,
        grad_clip: float, tau_target: float, dtype: torch.dtype,
    ) -> None:
        self.online, self.target, self.optimizer = online, target, optimizer
        self.grad_clip = grad_clip
        self.tau_target = tau_target
        self.dtype = dtype
        self._networks = _OnlineAndTarget(online, target)
        self._names = [name for name, _ in online.named_parameters()]
        self._tensors: dict[str, list[torch.Tensor]] = {}
        self._updates = 0  # Adam's step count, as its state holds it
        # Adam's step size and 1 / sqrt(1 - beta2^t) for the coming update.
        self._scalars = torch.zeros(2, dtype=torch.float32, device=online.device)
        # fullgraph: a graph break would split the step and lose the point of compiling it.
        # cpp_wrapper: the graph's kernels are called from C++, not Python (a step about 4%
        # faster: its ~150 tensors are checked and passed without the interpreter).
        self._compiled = torch.compile(self._step, fullgraph=True, options={"cpp_wrapper": True})

    def sync(self) -> None:
        """Gather the master weights, the target's, Adam's state (created as Adam creates it,
        if it does not exist yet) and make the weight copies the forwards read."""
        group = self.optimizer.param_groups[0]
        if group["weight_decay"] or group["amsgrad"] or group["maximize"]:
            raise ValueError("the compiled step makes plain Adam's update only")
        params = list(self.online.parameters())
        for p in params:
            state = self.optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        counts = {float(self.optimizer.state[p]["step"]) for p in params}
        if len(counts) != 1:
            raise ValueError(f"Adam's step counts differ between parameters: {sorted(counts)}")
        self._updates = int(counts.pop())
        masters = [p.detach() for p in params]
        targets = [p.detach() for p in self.target.parameters()]
        low = self.dtype != torch.float32
        self._tensors = {
            "masters": masters,
            "targets": targets,
            "exp_avgs": [self.optimizer.state[p]["exp_avg"] for p in params],
            "exp_avg_sqs": [self.optimizer.state[p]["exp_avg_sq"] for p in params],
            "steps": [self.optimizer.state[p]["step"] for p in params],
            # In float32 the forwards read the masters themselves.
            "online_weights": [p.to(self.dtype) for p in masters] if low else masters,
            "target_weights": [p.to(self.dtype) for p in targets] if low else targets,
        }

    def __call__(
        self, replay: DeviceReplay, temperature: float | torch.Tensor, loss_sum: torch.Tensor
    ) -> None:
        """One update from a batch of ``replay``, its loss added to ``loss_sum``."""
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        self._updates += 1
        self._scalars.copy_(torch.tensor([group["lr"] / (1 - beta1**self._updates),
                                          1 / math.sqrt(1 - beta2**self._updates)]))
        # As a 1-element view: inductor (torch 2.13) drops in-place updates of a 0-d float64
        # input, while the 0-d float32 step counts are updated.
        with warnings.catch_warnings():
            # Said when compiling, of the replay's float16 views cast on to bfloat16: harmless.
            warnings.filterwarnings("ignore", "bf16 and fp16 are mixed in the scheduler node")
            self._compiled(replay, temperature, loss_sum.view(1), beta1, beta2, group["eps"],
                           self._scalars, **self._tensors)

    def _loss(self, online_weights, target_weights, batch, temperature):
        weights = {f"online.{name}": w for name, w in zip(self._names, online_weights)}
        weights |= {f"target.{name}": w for name, w in zip(self._names, target_weights)}
        with torch.autocast(self.online.device.type, dtype=self.dtype, cache_enabled=False,
                            enabled=self.dtype != torch.float32):
            return functional_call(self._networks, weights, (batch, temperature)).float()

    @torch.no_grad()
    def _step(
        self, replay, temperature, loss_sum, beta1, beta2, eps, scalars, *, masters, targets,
        exp_avgs, exp_avg_sqs, steps, online_weights, target_weights,
    ) -> None:
        batch = replay.sample()
        with torch.enable_grad():
            grads, loss = grad_and_value(self._loss)(
                online_weights, target_weights, batch, temperature)
        grads = [g.float() for g in grads]
        # clip_grad_norm_'s: the norm of the parameters' norms, a coefficient of at most 1.
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        clip = (self.grad_clip / (norm + 1e-6)).clamp(max=1.0)
        low = self.dtype != torch.float32
        step_size, inverse_correction2 = scalars[0], scalars[1]
        for i, p in enumerate(masters):
            g = grads[i] * clip
            steps[i] += 1
            exp_avgs[i].lerp_(g, 1 - beta1)
            exp_avg_sqs[i].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = exp_avg_sqs[i].sqrt() * inverse_correction2 + eps
            p.sub_(step_size * exp_avgs[i] / denom)
            targets[i].lerp_(p, self.tau_target)
            if low:
                online_weights[i].copy_(p)
                target_weights[i].copy_(targets[i])
        loss_sum += loss.double()
