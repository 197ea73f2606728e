"""A light FPN-style head: project every stage to a common width, upsample to the finest
stage, sum, refine with one 3x3 conv and classify. Logits come out at the finest stride."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from models.registry import register_head


@register_head("light")
class LightHead(nn.Module):
    def __init__(self, in_channels: list[int], num_classes: int, width: int = 32):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.refine = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, features):
        size = features[0].shape[-2:]
        x = self.lateral[0](features[0])
        for lateral, feat in zip(self.lateral[1:], features[1:]):
            x = x + F.interpolate(lateral(feat), size=size, mode="bilinear", align_corners=False)
        return self.classifier(self.refine(x))
