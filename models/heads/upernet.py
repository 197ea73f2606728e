"""UperNet's head and the FCN auxiliary head, as mmsegmentation builds them
(open-mmlab/mmsegmentation ``mmseg/models/decode_heads/{uper_head,psp_head,fcn_head}.py`` and
``decode_head.py``), with mmseg's parameter names so an mmseg checkpoint's ``decode_head.*`` /
``auxiliary_head.*`` load as they are.

UPerHead on features [f1..f4] (finest first), ``channels`` wide:
    PPM on f4: for each pool scale s, AdaptiveAvgPool(s) -> 1x1 ConvModule -> resize back;
    ``bottleneck`` 3x3 ConvModule on [f4, ppm outputs];
    ``lateral_convs`` 1x1 on f1..f3, top-down: lateral[i-1] += resize(lateral[i]);
    ``fpn_convs`` 3x3 on the three laterals; all four levels resized to f1's size, concatenated,
    ``fpn_bottleneck`` 3x3; Dropout2d; ``conv_seg`` 1x1 -> classes (output at f1's stride).
FCNHead: ``num_convs`` 3x3 ConvModules on one feature (``in_index``), Dropout2d, ``conv_seg``.

A ConvModule is conv (no bias when a norm follows) -> BN -> ReLU. BatchNorm replaces the
configs' SyncBN (identical on one process). Initialisation follows mmcv: convs Kaiming-normal
(fan_out, ReLU), norms (1, 0), ``conv_seg`` normal(0, 0.01).
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.layers import MMCV_NAMES, ConvNormAct, kaiming_fan_out_
from models.registry import register_head


def resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def conv_module(in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                dilation: int = 1, norm: bool = True, act: bool = True) -> ConvNormAct:
    """mmcv's ``ConvModule`` with BN and ReLU: conv (bias only without a norm) -> bn -> activate,
    its key names and its initialisation (Kaiming-normal fan_out, zero bias)."""
    block = ConvNormAct(in_channels, out_channels, kernel_size, padding=padding,
                        dilation=dilation, norm=nn.BatchNorm2d if norm else None,
                        act=functools.partial(nn.ReLU, inplace=True) if act else None,
                        names=MMCV_NAMES)
    kaiming_fan_out_(block.conv)
    return block


class SegClassifier(nn.Module):
    """mmseg ``BaseDecodeHead.cls_seg``: Dropout2d then a 1x1 conv to the classes."""

    def __init__(self, channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def cls_seg(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(x))


class PyramidPoolingModule(nn.ModuleList):
    """PSPNet's PPM: per scale AdaptiveAvgPool(s) -> 1x1 ConvModule, resized to the input."""

    def __init__(self, pool_scales, in_channels: int, channels: int):
        super().__init__(nn.Sequential(nn.AdaptiveAvgPool2d(s),
                                       conv_module(in_channels, channels, 1))
                         for s in pool_scales)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [resize(branch(x), x.shape[2:]) for branch in self]


@register_head("upernet")
class UPerHead(SegClassifier):
    """mmseg ``UPerHead`` (see module docstring); ``forward(features) -> logits`` at f1's
    stride. Samba's config: channels 512, pool scales (1, 2, 3, 6), dropout 0.1."""

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 512,
                 pool_scales=(1, 2, 3, 6), dropout: float = 0.1):
        super().__init__(channels, num_classes, dropout)
        self.in_channels = list(in_channels)
        self.psp_modules = PyramidPoolingModule(pool_scales, in_channels[-1], channels)
        self.bottleneck = conv_module(in_channels[-1] + len(pool_scales) * channels, channels, 3,
                                     padding=1)
        self.lateral_convs = nn.ModuleList(conv_module(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(conv_module(channels, channels, 3, padding=1)
                                       for _ in in_channels[:-1])
        self.fpn_bottleneck = conv_module(len(in_channels) * channels, channels, 3, padding=1)

    def psp_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([x, *self.psp_modules(x)], dim=1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(features[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(features[len(self.lateral_convs)]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down path
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)] + [laterals[-1]]
        outs = [outs[0]] + [resize(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.cls_seg(self.fpn_bottleneck(torch.cat(outs, dim=1)))


@register_head("fcn")
class FCNHead(SegClassifier):
    """mmseg ``FCNHead`` on ``features[in_index]`` (concat_input False). UperNet's auxiliary
    head in Samba: in_index 2 (stage 3), channels 256, one 3x3 conv, dropout 0.1."""

    def __init__(self, in_channels: list[int], num_classes: int, in_index: int = 2,
                 channels: int = 256, num_convs: int = 1, kernel_size: int = 3,
                 dilation: int = 1, dropout: float = 0.1):
        super().__init__(channels, num_classes, dropout)
        self.in_index = in_index
        pad = kernel_size // 2 * dilation
        convs = [conv_module(in_channels[in_index] if i == 0 else channels, channels, kernel_size,
                            padding=pad, dilation=dilation) for i in range(num_convs)]
        self.convs = nn.Sequential(*convs) if convs else nn.Identity()

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self.convs(features[self.in_index]))
