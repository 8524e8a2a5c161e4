"""The Q-network every algorithm shares: a state embedding, then ``cmfq.MeanFieldHead``."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from cmfq import MeanFieldHead
from cmfq.envs import GroupSpec
from cmfq.options import option

NEIGHBOR_BRANCHES: dict[str, dict] = {
    "published": {"action_hidden": (64, 32)},
    "counts": {"action_hidden": (64, 32), "action_scale": 16.0},
    "direct": {"action_hidden": ()},
    "wide": {"action_hidden": (128, 128)},
}
"""``MeanFieldHead`` arguments of each way of taking the neighbours' mean action ā: the original
MFQ network's action branch (64, 32); the same on ā x 16, the scale of neighbour counts in a
16-agent team (a constant, so that the fused op's interventions are scaled alike); ā straight
into the trunk, no branch; a wider branch (128, 128)."""


@dataclass
class NetworkOptions:
    """The options of ``QNetwork``, alike for every algorithm (a fair comparison)."""

    neighbor_branch: str = option(
        "published", "How the network takes the neighbours' mean action: published (the original "
        "MFQ branch, 64 then 32 wide), counts (the same on 16 x the mean action, the scale of "
        "neighbour counts), direct (the mean action straight into the trunk), wide (a branch "
        "128 then 128 wide). A checkpoint records it.", choices=tuple(NEIGHBOR_BRANCHES))


class QNetwork(nn.Module):
    """Q(s, ., x) after the original MFQ battle network.

    The view (``[n, H, W, C]``) goes through two 3x3 convolutions of 32 channels and a dense 256,
    the feature vector through a dense 32; their concatenation is the state embedding (288 wide)
    that ``head`` (a ``MeanFieldHead``: action branch 64, 32 by default, see ``neighbor_branch``;
    trunk 128, 64) combines with the neighbours' (mean) action x. The embedding does not depend
    on x, so ``embed`` runs once per observation however many interventions ``causal_weights``
    evaluates on ``head``.
    """

    def __init__(
        self, spec: GroupSpec, neighbor_branch: str = NetworkOptions.neighbor_branch
    ) -> None:
        super().__init__()
        if neighbor_branch not in NEIGHBOR_BRANCHES:
            raise ValueError(f"neighbor_branch must be one of {tuple(NEIGHBOR_BRANCHES)}, got "
                             f"{neighbor_branch!r}")
        height, width, channels = spec.view_shape
        if height < 5 or width < 5:
            raise ValueError(f"the view of group {spec.name!r} is {height}x{width}; need >= 5x5")
        # The second convolution's ReLU comes after the flatten, which copies the channels-last
        # output into the dense layer's (C, H, W) order: the same numbers, but the ReLU's backward
        # then sees one layout, where after the convolution it would mix two (about 10x slower
        # on the CPU). The modules' indices, and so the state dict, are as before.
        self.view_encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3),
            nn.Flatten(),
            nn.ReLU(),
            nn.Linear(32 * (height - 4) * (width - 4), 256),
            nn.ReLU(),
        )
        self.feature_encoder = nn.Sequential(nn.Linear(spec.feature_dim, 32), nn.ReLU())
        self.head = MeanFieldHead(256 + 32, spec.n_actions, **NEIGHBOR_BRANCHES[neighbor_branch])
        self.n_actions = spec.n_actions

    embed_dtype: torch.dtype = torch.float32
    """The arithmetic of ``embed`` outside autocast: bfloat16 runs it (the convolutions and the
    dense layers, nearly all of a forward's work) under autocast and returns float32, so that the
    head, the action values and the causal weights stay float32 (``train_dtype``). Not saved: a
    loaded network embeds in float32."""

    _fixed_encoders: tuple[nn.Module, nn.Module] | None = None
    """Inside ``fixed_weights``: ``embed_dtype`` copies of the view and feature encoders."""

    @contextmanager
    def fixed_weights(self) -> Iterator[None]:
        """Promise that the weights do not change while inside (a training round's acting). With
        a bfloat16 ``embed_dtype``, ``embed`` then reads bfloat16 copies of the encoders made on
        entry rather than casting every weight at every forward as autocast does (a fifth of a
        64-row forward on the CPU); the casts round alike, so the embeddings are the same."""
        if self.embed_dtype == torch.float32:
            yield
            return
        self._fixed_encoders = tuple(
            copy.deepcopy(encoder).to(self.embed_dtype).requires_grad_(False)
            for encoder in (self.view_encoder, self.feature_encoder)
        )
        try:
            yield
        finally:
            self._fixed_encoders = None

    def embed(self, view: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """State embeddings ``[n, 288]`` of views ``[n, H, W, C]`` and features ``[n, F]``."""
        if self.embed_dtype == torch.float32:
            return self._embed(view, features, self.view_encoder, self.feature_encoder)
        encoders = self._fixed_encoders or (self.view_encoder, self.feature_encoder)
        with torch.autocast(view.device.type, dtype=self.embed_dtype, cache_enabled=False):
            return self._embed(view, features, *encoders).float()

    @staticmethod
    def _embed(
        view: torch.Tensor, features: torch.Tensor, view_encoder: nn.Module,
        feature_encoder: nn.Module,
    ) -> torch.Tensor:
        return torch.cat([view_encoder(view.permute(0, 3, 1, 2)), feature_encoder(features)],
                         dim=-1)

    def forward(
        self, view: torch.Tensor, features: torch.Tensor, mean_action: torch.Tensor
    ) -> torch.Tensor:
        """Action values ``[n, A]``."""
        return self.head(self.embed(view, features), mean_action)
