"""MS2MNet's HFP decoder (DrWuHonglin/MS2MNet ``models/MS2MNet.py``: ``HFPDecoder``, ``Block``,
``Mutilscal_MHSA``, ``MMPADBlock``, ``E_FFN``, ``MAF``; docs/models.md, "MS2MNet").

On encoder features [f1@H/2, f2@H/4, f3@H/8, f4@H/16], ``decode_channels`` (D) wide:

    x = Block(dil 1,3,5)(1x1 CBR(f4 -> D))
    x = ASAF(x, 1x1 CBR(f3 -> D));  aux3 = AuxHead(x);  x = Block(dil 3,5,7)(x)
    x = ASAF(x, f2);                aux2 = AuxHead(x);  x = Block(dil 5,7,9)(x)
    x = ASAF(1x1 ConvBN(x -> C1), f1)
    logits = MAF(dil 7,9,11)(x)                                        (at H/2)

Block (16 heads): x + BN(MHSA(x)), then x + E_FFN(x). MHSA: queries are the tokens of x
themselves (no projection); keys and values are a 1x1 conv (-> 2D) of a pooled (16x16)
multi-dilation pyramid of x; an SE channel branch is added. All of this is the released code's
structure, rewritten. ASAF is reconstructed from the paper figure (models/fusion/asaf.py).

Differences from upstream, all neutral at the paper configuration: an f2 with other than D
channels gets a 1x1 CBR (upstream requires f2 to have D = 256 channels); the auxiliary heads
run only in ``forward_with_aux`` (upstream computes them in eval too and drops them).
Conv initialisation is PyTorch's default: upstream's ``init_weight`` only visits direct
``nn.Conv2d`` children of the decoder, of which there are none.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.layers import ASAF, ConvNormAct, SpatialAttention
from models.registry import register_head

DEFAULT_DILATIONS = ((1, 3, 5), (3, 5, 7), (5, 7, 9), (7, 9, 11))


def conv_bn_relu6(in_channels: int, out_channels: int, kernel_size: int = 1,
                  dilation: int = 1, groups: int = 1, bias: bool = False,
                  act: bool = True) -> ConvNormAct:
    """conv -> BN -> ReLU6 (upstream ``ConvBNReLU``; ``act=False`` gives ``ConvBN``)."""
    return ConvNormAct(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups,
                       bias=bias, act=nn.ReLU6 if act else None)


class DilatedBranch(nn.Sequential):
    """dilated depthwise 3x3 CBR6 on the reduced map, then 1x1 CBR6 back to ``dim`` (the
    pyramid branches of MMPADBlock and MAF; convs with bias as upstream)."""

    def __init__(self, reduced: int, dim: int, dilation: int, kernel_size: int = 3):
        super().__init__(
            conv_bn_relu6(reduced, reduced, kernel_size, dilation, groups=reduced, bias=True),
            conv_bn_relu6(reduced, dim, 1, bias=True))


class SEChannelBranch(nn.Sequential):
    """GAP -> 1x1 (C/r) -> ReLU6 -> 1x1 -> sigmoid (the decoder's channel attention)."""

    def __init__(self, dim: int, ratio: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim // ratio, 1), nn.ReLU6(),
                         nn.Conv2d(dim // ratio, dim, 1), nn.Sigmoid())


class EnhancedFFN(nn.Module):
    """Upstream ``E_FFN``: 1x1 CBR6 -> (dw5x5 CBR6 + dw3x3 CBR6) -> 1x1 ConvBN -> ReLU6."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = conv_bn_relu6(dim, hidden, 1)
        self.dw5 = conv_bn_relu6(hidden, hidden, 5, groups=hidden)
        self.dw3 = conv_bn_relu6(hidden, hidden, 3, groups=hidden)
        self.fc2 = conv_bn_relu6(hidden, dim, 1, act=False)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        return self.act(self.fc2(self.dw5(x) + self.dw3(x)))


class PooledDilationPyramid(nn.Module):
    """Upstream ``MMPADBlock``: 1x1 reduce to C/r; three dilated depthwise branches and one 1x1
    branch, each lifted back to C and summed; 1x1 CBR6; times x; adaptive-average-pooled to
    ``pool_size`` x ``pool_size`` (the keys/values source of the attention)."""

    def __init__(self, dim: int, fc_ratio: int = 4, dilations=(3, 5, 7), pool_size: int = 16):
        super().__init__()
        reduced = dim // fc_ratio
        self.reduce = conv_bn_relu6(dim, reduced, 1, bias=True)
        self.dilated = nn.ModuleList(DilatedBranch(reduced, dim, d) for d in dilations)
        self.pointwise = nn.Sequential(conv_bn_relu6(reduced, reduced, 1, bias=True),
                                       conv_bn_relu6(reduced, dim, 1, bias=True))
        self.merge = conv_bn_relu6(dim, dim, 1, bias=True)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        summed = self.pointwise(reduced)
        for branch in self.dilated:
            summed = summed + branch(reduced)
        return self.pool(self.merge(summed) * x)


class MultiScaleAttention(nn.Module):
    """Upstream ``Mutilscal_MHSA``: softmax(x K^T / sqrt(d)) V over ``num_heads`` heads with
    K, V = 1x1 conv of the pooled pyramid; plus x * SE(x)."""

    def __init__(self, dim: int, num_heads: int, fc_ratio: int = 4, dilations=(3, 5, 7),
                 pool_size: int = 16):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MultiScaleAttention: dim {dim} is not divisible by "
                             f"num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.pyramid = PooledDilationPyramid(dim, fc_ratio, dilations, pool_size)
        self.channel_attention = SEChannelBranch(dim, fc_ratio)
        self.kv = nn.Conv2d(dim, 2 * dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, d = self.num_heads, c // self.num_heads
        q = x.reshape(b, heads, d, h * w).transpose(-2, -1)                 # (b, heads, HW, d)
        k, v = self.kv(self.pyramid(x)).reshape(b, 2, heads, d, -1).transpose(-2, -1).unbind(1)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(-2, -1).reshape(b, c, h, w)
        return out + self.channel_attention(x) * x


class HFPBlock(nn.Module):
    """Upstream ``Block``: x + BN(MHSA(x)); x + E_FFN(x) with hidden dim // mlp_ratio."""

    def __init__(self, dim: int, num_heads: int = 16, mlp_ratio: int = 4, pool_size: int = 16,
                 dilations=(3, 5, 7)):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = MultiScaleAttention(dim, num_heads, mlp_ratio, dilations, pool_size)
        self.mlp = EnhancedFFN(dim, dim // mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.norm1(self.attn(x))
        return x + self.mlp(x)


class MAFHead(nn.Module):
    """Upstream ``MAF`` segmentation head: (dilated pyramid, 1x1 CBR6, times x) + x * SE(x)
    + x * spatial attention (5x5) -> separable 3x3 CBR6 -> Dropout2d -> 1x1 to classes."""

    def __init__(self, dim: int, num_classes: int, fc_ratio: int = 4, dilations=(7, 9, 11),
                 dropout: float = 0.1):
        super().__init__()
        reduced = dim // fc_ratio
        self.reduce = conv_bn_relu6(dim, reduced, 1, bias=True)
        self.dilated = nn.ModuleList(DilatedBranch(reduced, dim, d) for d in dilations)
        self.merge = conv_bn_relu6(dim, dim, 1, bias=True)
        self.channel_attention = SEChannelBranch(dim, fc_ratio)
        self.spatial_attention = SpatialAttention(5)
        self.classify = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False), nn.BatchNorm2d(dim),
            conv_bn_relu6(dim, dim, 1),                      # upstream SeparableConvBNReLU
            nn.Dropout2d(dropout),
            nn.Conv2d(dim, num_classes, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        pyramid = sum(branch(reduced) for branch in self.dilated)
        fused = (self.merge(pyramid) * x + self.channel_attention(x) * x
                 + self.spatial_attention(x) * x)
        return self.classify(fused)


class AuxHead(nn.Sequential):
    """Deep-supervision head: 3x3 CBR6 -> Dropout2d -> 1x1 (with bias) to classes."""

    def __init__(self, dim: int, channels: int, num_classes: int, dropout: float):
        super().__init__(conv_bn_relu6(dim, channels, 3), nn.Dropout2d(dropout),
                         nn.Conv2d(channels, num_classes, 1))


@register_head("hfp")
class HFPDecoder(nn.Module):
    """``forward(features) -> logits`` at f1's stride (H/2); ``forward_with_aux`` adds the two
    deep-supervision logits (after fusing f3, after fusing f2)."""

    def __init__(self, in_channels: list[int], num_classes: int, decode_channels: int = 256,
                 num_heads: int = 16, mlp_ratio: int = 4, pool_size: int = 16,
                 fc_ratio: int = 4, dilations=DEFAULT_DILATIONS, dropout: float = 0.1,
                 aux_channels: int = 256):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"HFPDecoder needs four encoder stages, got channels {in_channels}")
        c1, c2, c3, c4 = in_channels
        dim = decode_channels

        def block(dils):
            return HFPBlock(dim, num_heads, mlp_ratio, pool_size, dils)

        self.reduce_f4 = conv_bn_relu6(c4, dim, 1)
        self.reduce_f3 = conv_bn_relu6(c3, dim, 1)
        self.block4 = block(dilations[0])
        self.fuse3 = ASAF(dim)
        self.block3 = block(dilations[1])
        self.project_f2 = nn.Identity() if c2 == dim else conv_bn_relu6(c2, dim, 1)
        self.fuse2 = ASAF(dim)
        self.block2 = block(dilations[2])
        self.reduce_to_f1 = conv_bn_relu6(dim, c1, 1, act=False)
        self.fuse1 = ASAF(c1)
        self.seg_head = MAFHead(c1, num_classes, fc_ratio, dilations[3], dropout)
        self.aux_head3 = AuxHead(dim, aux_channels, num_classes, dropout)
        self.aux_head2 = AuxHead(dim, aux_channels, num_classes, dropout)

    def _decode(self, features, with_aux: bool):
        f1, f2, f3, f4 = features
        aux = []
        x = self.block4(self.reduce_f4(f4))
        x = self.fuse3(x, self.reduce_f3(f3))
        if with_aux:
            aux.append(self.aux_head3(x))
        x = self.fuse2(self.block3(x), self.project_f2(f2))
        if with_aux:
            aux.append(self.aux_head2(x))
        x = self.fuse1(self.reduce_to_f1(self.block2(x)), f1)
        return self.seg_head(x), aux

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self._decode(features, with_aux=False)[0]

    def forward_with_aux(self, features: list[torch.Tensor]):
        """(main logits, [aux logits after stage-3 fusion, after stage-2 fusion])."""
        return self._decode(features, with_aux=True)
