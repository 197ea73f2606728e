"""ASAF, MS2MNet's adaptive spatial attention fusion (DrWuHonglin/MS2MNet; docs/models.md,
"MS2MNet"), and its use as an RGB-X stage fusion ``asaf``.

**Reconstructed**: the release calls ``ASAFFusion(channels)`` as ``fuse(x_decoder, x_encoder)``
in its HFP decoder but never defines it. Built from the README figure (images/ASAF.png, as
read in docs/models.md, "MS2MNet"):

    x_dec  <- bilinear resize to x_en's size (the decoder path is one stride coarser)
    att    =  x_en * sigmoid(conv_kxk([mean_c x_en, max_c x_en]))    spatial attention
    out    =  ReLU6(BN(conv1x1(BN(conv5x5(w * att + (1 - w) * x_dec)))))

Choices the figure leaves open: the spatial-attention conv is 5x5 with bias, like the
release's own spatial attention in MAF (``s_conv``); the mixing weight is one learnable scalar
w = sigmoid(theta), theta = 0 at init (w = 0.5); the convs after the mix have no bias (BN
follows).

As a stage fusion (kind ``stage``) ``asaf`` treats stream a (RGB) as the decoder input and
stream b (the auxiliary modality) as the attended encoder input: f_i = ASAF_i(a_i, b_i), the
spatial attention selecting where the auxiliary features are trusted. Its 5x5 conv costs
25 C^2 parameters per stage (26M at C = 1024): heavy for wide last stages.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.fusion.base import FusionModule
from models.registry import register_fusion


class SpatialAttention(nn.Module):
    """sigmoid(conv([channel mean, channel max])) -> (B, 1, H, W)."""

    def __init__(self, kernel_size: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class ASAF(nn.Module):
    """``forward(x_dec, x_en) -> fused`` at x_en's size, ``channels`` wide (both inputs)."""

    def __init__(self, channels: int, attention_kernel: int = 5, mix_kernel: int = 5):
        super().__init__()
        self.spatial_attention = SpatialAttention(attention_kernel)
        self.mix_logit = nn.Parameter(torch.zeros(1))
        self.post = nn.Sequential(
            nn.Conv2d(channels, channels, mix_kernel, padding=mix_kernel // 2, bias=False),
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU6(),
        )

    def forward(self, x_dec: torch.Tensor, x_en: torch.Tensor) -> torch.Tensor:
        if x_dec.shape[-2:] != x_en.shape[-2:]:
            x_dec = F.interpolate(x_dec, size=x_en.shape[-2:], mode="bilinear",
                                  align_corners=False)
        attended = x_en * self.spatial_attention(x_en)
        w = torch.sigmoid(self.mix_logit)
        return self.post(w * attended + (1 - w) * x_dec)


@register_fusion("asaf")
class ASAFStageFusion(FusionModule):
    kind = "stage"
    summary = "MS2MNet ASAF: spatial attention on X, mixed with RGB by a learned weight"

    def __init__(self, channels: list[int], attention_kernel: int = 5, mix_kernel: int = 5):
        super().__init__(channels)
        self.asaf = nn.ModuleList(ASAF(c, attention_kernel, mix_kernel) for c in channels)

    def forward(self, stage_index: int, feat_a: torch.Tensor, feat_b: torch.Tensor):
        return self.asaf[stage_index](feat_a, feat_b)
