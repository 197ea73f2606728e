"""FusionSegmenter: encoder(s) + fusion module + head, for any registered parts.

Encoder contract: ``Encoder(in_chans=..., **kw)`` with ``out_channels`` (per stage) and
``forward(x) -> list of channels-first features``, finest first.
Head contract: ``Head(in_channels, num_classes, **kw)`` with ``forward(features) -> logits`` at
any stride; the segmenter resizes logits to the input (bilinear, align_corners=False).

How the streams are wired depends on the fusion's kind (models/fusion/base.py). A *shared*
(siamese) encoder applies one set of weights to both modalities, as Sigma does; an auxiliary
input with fewer channels than the encoder expects is tiled, as Sigma's loader replicates a
single-channel X to three channels.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.base import SegModel
from models.fusion.base import FusionModule
from models.registry import create_fusion


def match_channels(x: torch.Tensor, channels: int, what: str = "input") -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    raise ValueError(f"{what} has {x.shape[1]} channels; the encoder expects {channels}")


class FusionSegmenter(SegModel):
    def __init__(self, make_encoder: Callable[[int], nn.Module],
                 make_head: Callable[[list[int]], nn.Module], fusion: str | FusionModule,
                 num_classes: int, modalities: dict[str, int] | None = None,
                 shared_encoder: bool = False, fusion_kwargs: dict | None = None,
                 ignore_index: int = 255):
        """``make_encoder(in_chans)`` and ``make_head(in_channels)`` build the parts;
        ``modalities`` maps the input keys (primary first) to their channel counts: two, or one
        for a single-modality dataset (LoveDA, Vaihingen RGB) with a fusion that keeps the
        primary stream."""
        super().__init__()
        modalities = modalities or {"rgb": 3, "x": 1}
        if len(modalities) not in (1, 2):
            raise ValueError(f"FusionSegmenter takes one or two modalities, got "
                             f"{list(modalities)}")
        (self.key_a, c_a), (self.key_b, c_b) = (list(modalities.items()) + [(None, None)])[:2]
        self.modalities = (self.key_a, self.key_b)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.shared_encoder = shared_encoder

        probe = make_encoder(c_a)
        if isinstance(fusion, str):
            fusion = create_fusion(fusion, list(probe.out_channels), **(fusion_kwargs or {}))
        self.fusion = fusion
        kind = fusion.kind
        if self.key_b is None and not (kind == "single" and fusion.keeps == "a"):
            raise ValueError(f"fusion {type(fusion).__name__} needs two modalities but the data "
                             f"has one ({self.key_a!r}); use the rgb_only fusion")
        if kind == "single":
            self.modalities = (self.key_a,) if fusion.keeps == "a" else (self.key_b,)
            self.encoder_a = probe if fusion.keeps == "a" else make_encoder(c_b)
            self.head = make_head(list(self.encoder_a.out_channels))
        elif kind == "input":
            self.encoder_a = make_encoder(fusion.input_channels(c_a, c_b))
            self.head = make_head(list(self.encoder_a.out_channels))
        elif kind in ("stage", "logits"):
            self.encoder_a = probe
            if not shared_encoder:
                self.encoder_b = make_encoder(c_b)
            self.head = make_head(list(probe.out_channels))
            if kind == "logits":
                self.head_b = make_head(list(probe.out_channels))
        else:
            raise ValueError(f"fusion {type(fusion).__name__} has unknown kind {kind!r}")
        self.in_chans = getattr(self.encoder_a, "in_chans", None)

    def _encode_b(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.shared_encoder:
            return self.encoder_a(match_channels(x, self.in_chans or x.shape[1], self.key_b))
        return self.encoder_b(x)

    def extract(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The per-stage features the head decodes (fused for stage fusions). Subclasses with
        auxiliary heads (UperNet's FCN, deep supervision) read them from here."""
        kind = self.fusion.kind
        if kind == "single":
            return self.encoder_a(inputs[self.modalities[0]])
        if kind == "input":
            return self.encoder_a(self.fusion.fuse_inputs(inputs[self.key_a], inputs[self.key_b]))
        if kind == "logits":
            raise TypeError("late (logits) fusion has two feature sets; use forward()")
        feats_a = self.encoder_a(inputs[self.key_a])
        feats_b = self._encode_b(inputs[self.key_b])
        return [self.fusion(i, fa, fb) for i, (fa, fb) in enumerate(zip(feats_a, feats_b))]

    def decode(self, features: list[torch.Tensor], size) -> torch.Tensor:
        return F.interpolate(self.head(features), size=size, mode="bilinear", align_corners=False)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        size = inputs[self.modalities[0]].shape[-2:]
        if self.fusion.kind == "logits":
            la = self.decode(self.encoder_a(inputs[self.key_a]), size)
            lb = F.interpolate(self.head_b(self._encode_b(inputs[self.key_b])), size=size,
                               mode="bilinear", align_corners=False)
            return self.fusion.fuse_logits(la, lb)
        return self.decode(self.extract(inputs), size)
