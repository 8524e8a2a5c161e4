"""Gradient steps: the online network, its target copy and Adam, and ``Learner.learn``, which makes
a round's updates from the replay buffer.

One update: a batch of the replay, the algorithm's TD loss against the target, backward, the
gradient-norm clip, Adam, then the soft target update target <- (1 - tau) target + tau online.
With ``step_dtype`` bfloat16 the loss (both networks' forwards, and so the backward) runs under
autocast: convolutions and matrix products in bfloat16, everything the optimizer keeps in float32.

Two ways to sample, one update. On the CPU the batches come from ``ReplayBuffer.sample`` with the
round's numpy generator, as they always have. On a GPU the replay's ring lives on the device too
(``DeviceReplay``, refreshed once a round; a ``SlotReplay``, the torch backend's, is there
already and is always sampled so, on the CPU too) and batches are drawn there, so an update is all
device work: the losses are summed on the device and read once a round, and with ``graph_step``
the whole update (sampling included) is captured once as a CUDA graph and replayed, one launch
instead of a few hundred small ones. The CPU's counterpart is ``compile_step``: the device
sampler on the host, and the whole update compiled as one graph (``cmfq.training.compiled_step``).

On the CPU the updates run with subnormal floats flushed to zero (``subnormals_flushed``): Adam's
first moment of a weight whose gradient stays zero decays by beta1 a step through the subnormal
range (below 1.2e-38), where every operation on it takes the CPU's slow microcode path. In a
map-40 battle about half of the first moments are subnormal after some thousand updates; torch's
fused Adam then takes 10x as long and the default training's steady state drops by about a fifth
(benchmarks/subnormal_updates.py). Flushed, such a moment reads as zero: the weight's update
changes by at most lr x 1.2e-38 / eps, below the float32 rounding of any weight that is not itself
that small (14 rounds of the default map-40 training gave the same metrics and weights, bit for
bit).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from cmfq.algos import Algorithm
from cmfq.training.compiled_step import CompiledStep
from cmfq.training.device_replay import DeviceReplay
from cmfq.training.replay import ReplayBuffer
from cmfq.training.slot_replay import SlotReplay

WARMUP_UPDATES = 3
"""Updates run eagerly (on a side stream) before a capture: they allocate Adam's state and the
gradients and warm the libraries' caches, as ``torch.cuda.graph`` asks. They are real updates."""


class Learner:
    """Makes gradient steps on ``online`` (an algorithm on its training device).

    Args:
        online: the network that learns; ``target`` is made as its frozen copy.
        lr: Adam's learning rate (the fused Adam; capturable with ``graph_step``).
        grad_clip: the gradient-norm clip of each update.
        tau_target: the soft target update's tau, after each update.
        batch_size: transitions per update.
        device_sampling: draw batches on ``online``'s device (what a GPU wants; a
            ``ReplayBuffer`` is copied there once a round, a ``SlotReplay`` needs it); False:
            ``ReplayBuffer.sample`` on the host.
        graph_step: capture the update as a CUDA graph (needs ``device_sampling`` on CUDA).
        step_dtype: float32, or bfloat16 for the loss under autocast (float32 weights).
        compile_step: make the update one ``torch.compile`` graph (``CompiledStep``; needs
            ``device_sampling`` on the CPU).
    """

    def __init__(
        self, online: Algorithm, *, lr: float, grad_clip: float, tau_target: float,
        batch_size: int, device_sampling: bool, graph_step: bool,
        step_dtype: torch.dtype = torch.float32, compile_step: bool = False,
    ) -> None:
        device = online.device
        if graph_step and not (device_sampling and device.type == "cuda"):
            raise ValueError("graph_step needs a CUDA device and device_sampling")
        if step_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"step_dtype must be float32 or bfloat16, got {step_dtype}")
        if compile_step and not (device_sampling and device.type == "cpu"):
            raise ValueError("compile_step needs the CPU and device_sampling")
        self.online = online
        self.target = copy.deepcopy(online).requires_grad_(False)
        # The fused kernel updates all parameters in one pass: 7x faster than torch's per-tensor
        # default on the CPU, where that loop was a quarter of an update. It keeps its step
        # counts on the device; capturable lets a CUDA graph capture it.
        self.optimizer = torch.optim.Adam(
            online.parameters(), lr=lr, fused=True, capturable=graph_step
        )
        self.grad_clip = grad_clip
        self.tau_target = tau_target
        self.batch_size = batch_size
        self.device_sampling = device_sampling
        self.graph_step = graph_step
        self.step_dtype = step_dtype
        self._device_replay: DeviceReplay | None = None
        self._temperature = torch.zeros((), device=device)
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._graphs: dict[bool, torch.cuda.CUDAGraph] = {}  # by "temperature > 0"
        self._eager_updates: dict[bool, int] = {True: 0, False: 0}  # before each capture
        self._compiled = CompiledStep(
            online, self.target, self.optimizer, grad_clip=grad_clip, tau_target=tau_target,
            dtype=step_dtype,
        ) if compile_step else None

    def learn(
        self, replay: ReplayBuffer | SlotReplay, n_updates: int, rng: np.random.Generator,
        temperature: float,
    ) -> float:
        """Make ``n_updates`` updates from ``replay`` at TD temperature ``temperature``; the mean
        loss (NaN for none). ``rng`` is the round's generator: the host sampler draws from it,
        the device sampler is seeded from it."""
        if n_updates == 0:
            return float("nan")
        with subnormals_flushed() if self.online.device.type == "cpu" else nullcontext():
            return self._learn(replay, n_updates, rng, temperature)

    def _learn(
        self, replay: ReplayBuffer | SlotReplay, n_updates: int, rng: np.random.Generator,
        temperature: float,
    ) -> float:
        if not self.device_sampling:
            if isinstance(replay, SlotReplay):
                raise ValueError("a SlotReplay is sampled on its device: use device_sampling")
            losses = []
            for _ in range(n_updates):
                batch = replay.sample(
                    self.batch_size, rng, with_neighbors=self.online.needs_neighbor_obs
                )
                losses.append(self._update(batch, temperature))
            # The losses are read once, at the end; their mean is numpy's of the same floats.
            return float(np.mean(torch.stack(losses).tolist()))
        if self._device_replay is None:
            eager_on_cpu = self.online.device.type == "cpu" and self._compiled is None
            self._device_replay = DeviceReplay(
                replay.capacity, self.batch_size, self.online.device,
                with_neighbors=self.online.needs_neighbor_obs, distinct=eager_on_cpu,
            )
        if self._device_replay.refresh(replay):
            self._drop_graphs()
        self._device_replay.seed(int(rng.integers(2**63)))
        self._temperature.fill_(temperature)
        self._loss_sum.zero_()
        if self._compiled is not None:
            self._compiled.sync()  # the weights or Adam's state may have been loaded since
        for _ in range(n_updates):
            self._device_replay.next_draw()
            self._device_update(temperature > 0)
        return self._loss_sum.item() / n_updates

    def state_dict(self) -> dict:
        """The target's and the optimizer's state (the online network is the caller's)."""
        return {"target": self.target.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``'s (a captured update is then captured again)."""
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # saved by a run with or without graphs
            group["capturable"] = self.graph_step
        self._drop_graphs()

    def _update(self, batch, temperature: float | torch.Tensor) -> torch.Tensor:
        """One update from ``batch``; its loss, detached."""
        # No cast cache: a capture must cast the weights afresh on each replay, and each update
        # casts a weight once anyway.
        with torch.autocast(self.online.device.type, dtype=self.step_dtype,
                            enabled=self.step_dtype != torch.float32, cache_enabled=False):
            loss = self.online.loss(batch, self.target, temperature)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.online.parameters(), self.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            for p_target, p in zip(self.target.parameters(), self.online.parameters(),
                                   strict=True):
                p_target.lerp_(p, self.tau_target)
        return loss.detach()

    def _device_step(self, boltzmann: bool) -> None:
        """Sample on the device, update, add the loss to the round's sum: device work only.
        ``boltzmann``: the temperature is > 0 and read from the device (a captured step replays
        with each round's); at 0 the Boltzmann value is the max, which needs no temperature."""
        batch = self._device_replay.sample()
        loss = self._update(batch, self._temperature if boltzmann else 0.0)
        self._loss_sum += loss.double()

    def _device_update(self, boltzmann: bool) -> None:
        """One update on the device: eager, the compiled step, or the captured graph (captured
        after the warm-up)."""
        if self._compiled is not None:
            self._compiled(self._device_replay, self._temperature if boltzmann else 0.0,
                           self._loss_sum)
            return
        if not self.graph_step:
            self._device_step(boltzmann)
            return
        graph = self._graphs.get(boltzmann)
        if graph is not None:
            graph.replay()
            return
        if self._eager_updates[boltzmann] < WARMUP_UPDATES:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), warnings.catch_warnings():
                # Adam warns when a capturable instance steps uncaptured: these steps come first.
                warnings.filterwarnings("ignore", "This instance was constructed with capturable")
                self._device_step(boltzmann)
            torch.cuda.current_stream().wait_stream(side)
            self._eager_updates[boltzmann] += 1
            return
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad()  # the captured backward allocates the gradients it replays
        with torch.cuda.graph(graph):
            self._device_step(boltzmann)
        self._graphs[boltzmann] = graph
        graph.replay()  # capturing ran nothing: this is the update

    def _drop_graphs(self) -> None:
        self._graphs.clear()
        self._eager_updates = {True: 0, False: 0}


@contextmanager
def subnormals_flushed() -> Iterator[None]:
    """Flush subnormal floats to zero on this thread while inside (the CPU's flush-to-zero and
    denormals-are-zero modes), then go back to the mode before. Torch's other threads keep
    theirs: with ``threads`` above 1 their share of an update still meets subnormals at full
    cost."""
    before = flushing_subnormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def flushing_subnormals() -> bool:
    """Whether this thread flushes subnormal floats to zero now (torch can set the mode, not read
    it): the smallest float32 times one."""
    return (torch.tensor([1e-45]) * 1.0).item() == 0.0
