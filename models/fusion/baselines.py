"""Baseline fusions every multimodal ablation needs: single modality, early (input concat),
late (logit sum) and pixel-aligned mid fusion (add, concat + 1x1 conv)."""
from __future__ import annotations

import torch
import torch.nn as nn

from models.fusion.base import FusionModule
from models.registry import register_fusion


@register_fusion("rgb_only")
class RGBOnly(FusionModule):
    kind = "single"
    keeps = "a"
    summary = "primary image only (single-modality baseline)"


@register_fusion("x_only")
class XOnly(FusionModule):
    kind = "single"
    keeps = "b"
    summary = "auxiliary modality only (single-modality baseline)"


@register_fusion("early_concat")
class EarlyConcat(FusionModule):
    kind = "input"
    summary = "concatenate the inputs along channels; one encoder"

    def input_channels(self, c_a: int, c_b: int) -> int:
        return c_a + c_b

    def fuse_inputs(self, x_a, x_b):
        return torch.cat([x_a, x_b], dim=1)


@register_fusion("late_logits")
class LateLogits(FusionModule):
    kind = "logits"
    summary = "two full encoder-head paths; sum of logits (a product of posteriors)"

    def fuse_logits(self, logits_a, logits_b):
        return logits_a + logits_b


@register_fusion("add")
class AddFusion(FusionModule):
    summary = "element-wise sum of the two streams at every stage"

    def forward(self, stage_index, feat_a, feat_b):
        return feat_a + feat_b


@register_fusion("concat_conv")
class ConcatConvFusion(FusionModule):
    summary = "concatenate the streams, 1x1 conv + BN + ReLU back to the stage width"

    def __init__(self, channels):
        super().__init__(channels)
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c),
                          nn.ReLU(inplace=True))
            for c in channels
        )

    def forward(self, stage_index, feat_a, feat_b):
        return self.proj[stage_index](torch.cat([feat_a, feat_b], dim=1))
