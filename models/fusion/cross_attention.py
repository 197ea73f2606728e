"""Cross-modal attention fusion: context from anywhere in either modality reaches every pixel.

At each stage the two streams are merged by a 1x1 conv; every position then attends to the
tokens of both modalities (average-pooled to at most ``max_tokens`` per modality so the cost
stays linear in the image size), and the attended context is added back. Pixel-aligned fusions
(add, concat) only see a neighbourhood; this one propagates context spatially, which
SynRGBX's corruption sets reward (docs/datasets.md: pixel-local fusion is capped at 0.77 mIoU
under night + holes, spatially propagating fusion can reach 0.99).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.fusion.base import FusionModule
from models.registry import register_fusion


class CrossModalAttention(nn.Module):
    def __init__(self, channels: int, heads: int, max_tokens: int):
        super().__init__()
        self.merge = nn.Sequential(nn.Conv2d(2 * channels, channels, 1, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.max_side = int(math.isqrt(max_tokens))

    def _tokens(self, x):
        if x.shape[-2] * x.shape[-1] > self.max_side ** 2:
            x = F.adaptive_avg_pool2d(x, self.max_side)
        return x.flatten(2).transpose(1, 2)

    def forward(self, a, b):
        fused = self.merge(torch.cat([a, b], dim=1))
        bsz, c, h, w = fused.shape
        query = self.norm_q(fused.flatten(2).transpose(1, 2))
        context = self.norm_kv(torch.cat([self._tokens(a), self._tokens(b)], dim=1))
        out, _ = self.attn(query, context, context, need_weights=False)
        return fused + out.transpose(1, 2).reshape(bsz, c, h, w)


@register_fusion("cross_attention")
class CrossAttentionFusion(FusionModule):
    summary = "merge + attention over pooled tokens of both modalities (spatial context)"

    def __init__(self, channels, max_tokens: int = 64, head_dim: int = 16):
        super().__init__(channels)
        self.blocks = nn.ModuleList(
            CrossModalAttention(c, max(1, c // head_dim), max_tokens) for c in channels
        )

    def forward(self, stage_index, feat_a, feat_b):
        return self.blocks[stage_index](feat_a, feat_b)
