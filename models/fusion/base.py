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

A ``stage`` fusion may also feed back into the encoders (``feeds_back = True``, Mamba-Diffusion's
``dcf`` / ``ds_s4`` / ``dcf+ds_s4``): an encoder that steps through its stages (Mamba-Diffusion's,
models/zoo/mamba_diffusion.py) then calls, at stage i, on channels-last streams (B, H, W, C_i),

    a, b  = interact(i, a, b)    the streams both encoders continue from
    fused = merge(i, a, b)       the stage's fused feature for the head, channels-first

while any other encoder calls ``forward`` only. The defaults (streams unchanged, ``merge`` =
``forward``) make every stage fusion usable in both.
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

    #: stage fusions: True when the streams should continue from ``interact``'s outputs in
    #: an encoder that supports it (module docstring); False: the streams run unchanged
    feeds_back: bool = False

    # stage fusion
    def forward(self, stage_index: int, feat_a: torch.Tensor, feat_b: torch.Tensor):
        raise NotImplementedError(f"{type(self).__name__} is a {self.kind!r} fusion")

    # stage fusion that feeds back (``feeds_back``)
    def interact(self, stage_index: int, a: torch.Tensor,
                 b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channels-last streams (B, H, W, C_i) -> the streams the encoders continue from;
        by default unchanged."""
        return a, b

    def merge(self, stage_index: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Channels-last streams (``interact``'s outputs) -> the stage's fused feature,
        channels-first (B, C_i, H_i, W_i); by default ``forward`` on the streams."""
        return self(stage_index, a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2))

    # input fusion
    def input_channels(self, c_a: int, c_b: int) -> int:
        raise NotImplementedError

    def fuse_inputs(self, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # logits fusion
    def fuse_logits(self, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
