"""Sigma's channel-aware Mamba decoder (zifuwan/Sigma ``models/decoders/MambaDecoder.py`` and
``CVSSDecoderBlock`` in ``models/encoders/vmamba.py``; docs/models.md, "Sigma").

For stage features F_0..F_3 (channels C_0..C_3, finest first), channels-last inside:

    y = PatchExpand(F_3)             Linear(C_3 -> 4 C_2, no bias), 2x2 pixel shuffle with the
                                     channel index innermost ('(p1 p2 c)'), LN(C_2)
    for k = 1, 2, 3 (dims C_2, C_1, C_0):
        y = y + F_{3-k}              y bilinearly resized first if the sizes differ (odd sizes,
                                     PST900's 720x1280)
        y = 4 x CVSS(y)
        y = UpsampleExpand(y)        Linear(C -> C_next, no bias), bilinear x2, LN; not after k=3
    y = LN(y);  y = FinalUpsample_X4(y)   Linear -> bilinear x2 -> Linear -> bilinear x2 -> LN
    logits = Conv1x1(y, no bias)     stride 1 relative to the input for sizes divisible by 32

CVSS block (d_state 4, ssm_ratio 2, DropPath linspace(0, 0.1) over 4 x 4 slots as upstream):
    x = s1 * in + DropPath(SS2D(LN1 in));   out = CAB(LN2 x) + s2 * x
    CAB = conv3x3(C -> C/3) -> GELU -> conv3x3(-> C) -> channel attention
    channel attention: x * sigmoid(fc(avgpool x) + fc(maxpool x)), fc = 1x1(C -> C/30) -> SiLU ->
    1x1(-> C), no biases

With Sigma's encoders C_i = C_0 * 2^i and every width above is upstream's; other channel lists
work too (each expand maps to the next stage's width). Parameter names are upstream's
(``layers_up.{0..3}``, ``norm_up``, ``up.{linear1,linear2,norm}``, ``output``). Initialisation as
upstream's ``init_weight(decode_head, kaiming_normal_, fan_in, relu)``: every Conv weight is
Kaiming-normal, Linear layers keep PyTorch's default.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.backbones.ss2d import SS2D
from models.layers import DropPath
from models.registry import register_head


def _pixel_shuffle_last(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, H, W, s*s*C) -> (B, sH, sW, C), channel index innermost: 'b h w (p1 p2 c)'."""
    b, h, w, _ = x.shape
    x = x.view(b, h, w, scale, scale, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * scale, w * scale, x.shape[-1])


def _upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 on channels-last tokens (upstream goes through channels-first)."""
    x = F.interpolate(x.permute(0, 3, 1, 2), scale_factor=2, mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1)


class PatchExpand(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.expand = nn.Linear(dim, 4 * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_pixel_shuffle_last(self.expand(x), 2))


class UpsampleExpand(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_upsample2x(self.linear(x)))


class FinalUpsampleX4(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, dim, bias=False)
        self.linear2 = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_upsample2x(self.linear2(_upsample2x(self.linear1(x)))))


class ChannelAttention(nn.Module):
    def __init__(self, num_feat: int, squeeze_factor: int = 30):
        super().__init__()
        hidden = max(1, num_feat // squeeze_factor)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(num_feat, hidden, 1, bias=False), nn.SiLU(),
                                nn.Conv2d(hidden, num_feat, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(self.avg_pool(x)) + self.fc(self.max_pool(x)))


class ChannelAttentionBlock(nn.Module):
    def __init__(self, num_feat: int, compress_ratio: int = 3, squeeze_factor: int = 30):
        super().__init__()
        mid = max(1, num_feat // compress_ratio)
        self.cab = nn.Sequential(nn.Conv2d(num_feat, mid, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(mid, num_feat, 3, padding=1),
                                 ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class CVSSBlock(nn.Module):
    """Channel-aware VSS block (upstream ``CVSSDecoderBlock``), channels-last."""

    def __init__(self, dim: int, drop_path: float = 0.0, d_state: int = 4,
                 ssm_ratio: float = 2.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.scale1 = nn.Parameter(torch.ones(dim))
        self.op = SS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio)
        self.drop_path = DropPath(drop_path)
        self.conv_blk = ChannelAttentionBlock(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.scale2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale1 + self.drop_path(self.op(self.norm1(x)))
        y = self.conv_blk(self.norm2(x).permute(0, 3, 1, 2).contiguous())
        return y.permute(0, 2, 3, 1) + x * self.scale2


class MambaUp(nn.Module):
    """CVSS blocks at one width, then ``UpsampleExpand`` to ``out_dim`` (None: last stage)."""

    def __init__(self, dim: int, depth: int, drop_paths: list[float], out_dim: int | None,
                 d_state: int = 4, ssm_ratio: float = 2.0):
        super().__init__()
        self.blocks = nn.ModuleList(CVSSBlock(dim, dp, d_state, ssm_ratio)
                                    for dp in drop_paths[:depth])
        self.upsample = UpsampleExpand(dim, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.upsample is None else self.upsample(x)


@register_head("mamba_decoder")
class MambaDecoder(nn.Module):
    """Sigma's decoder; ``forward(features) -> logits`` at 4x the finest feature's resolution."""

    def __init__(self, in_channels: list[int], num_classes: int, depth: int = 4, d_state: int = 4,
                 ssm_ratio: float = 2.0, drop_path_rate: float = 0.1):
        super().__init__()
        chans = list(in_channels)
        n = len(chans)
        if n < 2:
            raise ValueError(f"MambaDecoder needs at least two stages, got in_channels={chans}")
        self.in_channels = chans
        # upstream draws linspace(0, rate) over depths [4, 4, 4, 4] and gives the stage at C_j
        # the j-th slice of 4 (the slice of the coarsest stage is never used)
        rates = torch.linspace(0, drop_path_rate, n * depth, device="cpu").tolist()
        self.layers_up = nn.ModuleList([PatchExpand(chans[-1], chans[-2])])
        for j in range(n - 2, -1, -1):
            self.layers_up.append(MambaUp(chans[j], depth, rates[j * depth:(j + 1) * depth],
                                          chans[j - 1] if j > 0 else None, d_state, ssm_ratio))
        self.norm_up = nn.LayerNorm(chans[0])
        self.up = FinalUpsampleX4(chans[0])
        self.output = nn.Conv2d(chans[0], num_classes, 1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        feats = [f.permute(0, 2, 3, 1) for f in features]
        y = self.layers_up[0](feats[-1])
        for k, layer in enumerate(self.layers_up[1:], start=1):
            skip = feats[-1 - k]
            if y.shape[1:3] != skip.shape[1:3]:
                y = F.interpolate(y.permute(0, 3, 1, 2), size=skip.shape[1:3], mode="bilinear",
                                  align_corners=False).permute(0, 2, 3, 1)
            y = layer(y + skip)
        y = self.up(self.norm_up(y))
        return self.output(y.permute(0, 3, 1, 2).contiguous())
