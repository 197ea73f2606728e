"""The fusion-module contract shared by every encoder-decoder in models/.

A fusion module (a ``FusionModule`` subclass) is built for all encoder stages at once,
``cls(channels, **fusion_kwargs)`` with
``channels`` the per-stage channel counts of the encoder, and has one of four kinds:

    stage   forward(stage_index, feat_a, feat_b) -> fused, channels-first (B, C_i, H_i, W_i),
            same shape as feat_a; the two streams run side by side and each stage's fused map
            goes to the head (mid fusion: add, concat_conv, sigma, dcf, wase, ...).
    input   fuse_inputs(x_a, x_b) -> x; one encoder with ``input_channels(c_a, c_b)`` inputs
            (early fusion).
    logits  fuse_logits(logits_a, logits_b) -> logits; two full encoder-head paths (late fusion).
    single  one encoder on one modality, ``keeps`` = "a" or "b" (single-modality baselines).

Stream "a" is the primary image ("rgb"), stream "b" the auxiliary one ("x"), or text features
for fusions with ``pairs_with = "text"``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

FUSION_KINDS = ("stage", "input", "logits", "single")


class FusionModule(nn.Module):
    kind: str = "stage"
    keeps: str | None = None
    #: "image" for two image streams, "text" for image-with-text fusions (ReMamber's twister)
    pairs_with: str = "image"
    #: one line for ``ssmbench list fusions``
    summary: str = ""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.channels = list(channels)

    @property
    def num_stages(self) -> int:
        return len(self.channels)

    # stage fusion
    def forward(self, stage_index: int, feat_a: torch.Tensor, feat_b: torch.Tensor):
        raise NotImplementedError(f"{type(self).__name__} is a {self.kind!r} fusion")

    # input fusion
    def input_channels(self, c_a: int, c_b: int) -> int:
        raise NotImplementedError

    def fuse_inputs(self, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # logits fusion
    def fuse_logits(self, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
