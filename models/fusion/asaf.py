"""ASAF, MS2MNet's adaptive spatial attention fusion (DrWuHonglin/MS2MNet), as an RGB-X stage
fusion ``asaf``. The block itself, reconstructed from the README figure because the release
never defines it, is ``models.layers.ASAF`` (its docstring says how); MS2MNet's HFP decoder
uses it too.

As a stage fusion (kind ``stage``) ``asaf`` treats stream a (RGB) as the decoder input and
stream b (the auxiliary modality) as the attended encoder input: f_i = ASAF_i(a_i, b_i), the
spatial attention selecting where the auxiliary features are trusted. Its 5x5 conv costs
25 C^2 parameters per stage (26M at C = 1024): heavy for wide last stages.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.fusion.base import FusionModule
from models.layers import ASAF
from models.registry import register_fusion


@register_fusion("asaf")
class ASAFStageFusion(FusionModule):
    kind = "stage"
    summary = "MS2MNet ASAF: spatial attention on X, mixed with RGB by a learned weight"

    def __init__(self, channels: list[int], attention_kernel: int = 5, mix_kernel: int = 5):
        super().__init__(channels)
        self.asaf = nn.ModuleList(ASAF(c, attention_kernel, mix_kernel) for c in channels)

    def forward(self, stage_index: int, feat_a: torch.Tensor, feat_b: torch.Tensor):
        return self.asaf[stage_index](feat_a, feat_b)
