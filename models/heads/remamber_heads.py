"""ReMamber's two mask heads (yyh-rain-song/ReMamber ``model/conv_segmenter.py`` ``ConvDecoder``
and ``model/mamba_segmenter.py`` ``MambaDecoder``; docs/models.md, "ReMamber"). Both take the
four stage features [F1, F2, F3, F4] (finest first, F1 at stride 4, channels C, 2C, 4C, 8C) and
return one logit map (B, 1, H, W) at stride 1; ``forward(features, text=None)``.

Conv head (``remamber_conv``; hidden = 4C = 512 at the paper's C = 128):

    y = RB(8C -> hid)(F4), x2;  y = RB(4C + hid -> hid)([y, F3]), x2;
    y = RB(2C + hid -> hid)([y, F2]), x2
    y = conv3x3(hid + C -> hid)-BN-ReLU([y, F1]), x2, conv3x3-BN-ReLU, x2, conv3x3(hid -> 1)

  RB = 1x1 conv-BN-Hardswish (in -> in) -> dw3x3 -> BN -> Hardswish -> 1x1 conv-BN (in -> out),
  with no residual (upstream's ``ResBlock`` returns before adding it). Upsampling is bilinear
  x2 with align_corners=True; here it targets the next feature's size, which is x2 for even
  sizes (upstream would fail on odd ones).

Mamba head (``remamber_mamba``): stages at widths [8C, 4C, 2C, C], depths [2, 4, 2, 2]:

    x = Linear(3c -> c, no bias)([feat, g, ImageTextCorr(feat, text)])
        g = ReLU(Linear(text vector)): the first token's feature by default, as upstream (its
        decoder gets no ``pooler_out``, so it takes ``l_feat[..., 0]``); ``text_vector:
        pooled`` (head_kwargs) uses the text encoder's pooled vector instead (a variant)
    x = VSS blocks (v2 SS2D without z gate, no MLP)
    x = x2 bilinear (align_corners=True; to the next feature's size) -> Linear(c -> c/2) -> LN
    x = Fuse([x, F_next]) + F_next        Fuse = 2 x (conv3x3 no bias - BN - ReLU)
  final: x2 bilinear -> conv3x3(C/2 -> C/2, no bias)-BN-ReLU -> conv3x3(C/2 -> 1)

Conv weights of the conv head follow upstream's init (normal(0, sqrt(2 / fan_out)), BN (1, 0));
the Mamba head keeps PyTorch's defaults, as upstream.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.backbones.ss2d import VSSBlock
from models.layers import ConvNormAct, ImageTextCorr, fan_out_normal_
from models.registry import register_head
from models.text_encoder import TextFeatures


def _up_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


def conv_bn(c_in: int, c_out: int, act: type[nn.Module] | None = None) -> ConvNormAct:
    """Upstream ``Conv2d_BN``: 1x1 conv (no bias) - BN - optional activation (its key names)."""
    return ConvNormAct(c_in, c_out, 1, act=act, names=("conv", "bn", "act"))


def conv_bn_relu(c_in: int, c_out: int, bias: bool = True) -> ConvNormAct:
    """conv3x3 - BN - ReLU; spliced (``*conv_bn_relu(..)``) where upstream's keys index one flat
    ``nn.Sequential``."""
    return ConvNormAct(c_in, c_out, 3, bias=bias)


class MixBlock(nn.Module):
    """Upstream's ``ResBlock`` (no residual): 1x1-BN-Hardswish, dw3x3, BN, Hardswish, 1x1-BN."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = conv_bn(c_in, c_in, nn.Hardswish)
        self.dwconv = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
        self.norm = nn.BatchNorm2d(c_in)
        self.act = nn.Hardswish()
        self.conv2 = conv_bn(c_in, c_out)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out_normal_(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.norm(self.dwconv(self.conv1(x)))))


@register_head("remamber_conv")
class ReMamberConvHead(nn.Module):
    def __init__(self, in_channels: list[int], num_classes: int = 1, hidden: int | None = None):
        super().__init__()
        c1, c2, c3, c4 = in_channels
        hidden = hidden or 4 * c1
        self.mixer3 = MixBlock(c4, hidden)
        self.mixer2 = MixBlock(c3 + hidden, hidden)
        self.mixer1 = MixBlock(c2 + hidden, hidden)
        self.neck = nn.Sequential(
            *conv_bn_relu(hidden + c1, hidden), nn.Upsample(scale_factor=2, mode="bilinear",
                                                            align_corners=True),
            *conv_bn_relu(hidden, hidden), nn.Upsample(scale_factor=2, mode="bilinear",
                                                       align_corners=True),
            nn.Conv2d(hidden, num_classes, 3, padding=1),
        )

    def forward(self, features: list[torch.Tensor], text: TextFeatures | None = None):
        f1, f2, f3, f4 = features
        y = self.mixer3(f4)
        y = self.mixer2(torch.cat([_up_to(y, f3), f3], dim=1))
        y = self.mixer1(torch.cat([_up_to(y, f2), f2], dim=1))
        return self.neck(torch.cat([_up_to(y, f1), f1], dim=1))


class UpsampleHalf(nn.Module):
    """x2 bilinear (align_corners=True), Linear(c -> c/2, no bias), LN; channels-first."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim // 2, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: torch.Tensor, size=None) -> torch.Tensor:
        size = size or (2 * x.shape[-2], 2 * x.shape[-1])
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.norm(self.proj(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class FuseConv(nn.Module):
    """Upstream ``Fusion``: resize to the larger map, concat, 2 x (conv3x3 no bias-BN-ReLU)."""

    def __init__(self, c_a: int, c_b: int, c_out: int):
        super().__init__()
        self.fusion = nn.Sequential(*conv_bn_relu(c_a + c_b, c_out, bias=False),
                                    *conv_bn_relu(c_out, c_out, bias=False))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape[-1] < b.shape[-1]:
            a = _up_to(a, b)
        elif a.shape[-1] > b.shape[-1]:
            b = _up_to(b, a)
        return self.fusion(torch.cat([a, b], dim=1))


@register_head("remamber_mamba")
class ReMamberMambaHead(nn.Module):
    def __init__(self, in_channels: list[int], num_classes: int = 1, text_dim: int = 768,
                 num_tokens: int = 20, hidden_dim: int = 512, depths=(2, 4, 2, 2),
                 d_state: int = 1, ssm_ratio: float = 2.0, text_vector: str = "first_token"):
        super().__init__()
        if text_vector not in ("first_token", "pooled"):
            raise ValueError(f"text_vector must be 'first_token' or 'pooled', got {text_vector!r}")
        # upstream's segmenter calls the decoder without ``pooler_out``, so its global text
        # vector is the first token's feature (``l_feat[..., 0]``); "pooled" is our variant
        self.text_vector = text_vector
        dims = list(reversed(in_channels))                      # [8C, 4C, 2C, C]
        self.global_text = nn.ModuleList(
            nn.Sequential(nn.Linear(text_dim, d), nn.ReLU()) for d in dims)
        self.local_text = nn.ModuleList(
            ImageTextCorr(d, text_dim, hidden_dim, d, num_tokens) for d in dims)
        self.in_proj = nn.ModuleList(nn.Linear(3 * d, d, bias=False) for d in dims)
        self.blocks = nn.ModuleList(
            nn.Sequential(*(VSSBlock(d, d_state=d_state, ssm_ratio=ssm_ratio, mlp_ratio=0.0,
                                     version="v2", conv_bias=False, use_z_gate=False)
                            for _ in range(depth)))
            for d, depth in zip(dims, depths))
        self.upsample = nn.ModuleList(UpsampleHalf(d) for d in dims)
        self.fuse = nn.ModuleList(FuseConv(d // 2, d // 2, d // 2) for d in dims[:-1])
        last = dims[-1] // 2
        self.proj_out = nn.Sequential(  # nested as upstream (its key names)
            nn.Upsample(scale_factor=2, mode="bilinear"),
            conv_bn_relu(last, last, bias=False),
            nn.Conv2d(last, num_classes, 3, padding=1))

    def forward(self, features: list[torch.Tensor], text: TextFeatures | None = None):
        if text is None:
            raise TypeError("the ReMamber Mamba head needs the text features")
        pyramid = list(reversed(features))                      # [F4, F3, F2, F1]
        feat = pyramid[0]
        for i in range(len(pyramid)):
            x = feat.permute(0, 2, 3, 1)
            b, h, w, c = x.shape
            vector = text.tokens[:, 0] if self.text_vector == "first_token" else text.pooled
            g = self.global_text[i](vector)[:, None, None, :].expand(b, h, w, c)
            local = self.local_text[i](x, text.tokens)
            x = self.blocks[i](self.in_proj[i](torch.cat([x, g, local], dim=-1)))
            nxt = pyramid[i + 1].shape[-2:] if i + 1 < len(pyramid) else None
            feat = self.upsample[i](x.permute(0, 3, 1, 2), nxt)
            if i + 1 < len(pyramid):
                feat = self.fuse[i](feat, pyramid[i + 1]) + pyramid[i + 1]
        return self.proj_out(feat)
