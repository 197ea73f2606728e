"""FPN neck and multi-stage merging, as Mamba-Diffusion configures them (WenliangDu/MambaDiffusion
``configs/ddp_fuse-mamba_4x4_256x256_160k_whu-fianl.py``: mmseg ``FPN`` then DDP's
``MultiStageMerging``; docs/models.md, "Mamba-Diffusion").

    FPN                 per level a 1x1 lateral ConvModule (-> ``out_channels``), top-down
                        ``lateral[i-1] += nearest_resize(lateral[i])``, then a 3x3 ConvModule per
                        level; every ConvModule is conv (no bias: a norm follows) -> GroupNorm,
                        with no activation (``act_cfg=None``); ``num_outs`` = number of inputs.
    MultiStageMerging   every level bilinearly resized (align_corners=False) to the first
                        level's size, concatenated, 1x1 ConvModule (conv, no bias -> GroupNorm,
                        no activation) back to ``out_channels``.

``FPNMergeNeck`` chains the two: features [f1..f4] (finest first) -> one map (B, C, H1, W1).
Parameter names follow mmseg/DDP (``lateral_convs.{i}.conv``, ``lateral_convs.{i}.gn``,
``fpn_convs``, ``down``), so the upstream ``neck.0.*`` / ``neck.1.*`` keys map one to one.
Convolutions are Kaiming-normal (fan_out, ReLU) with unit/zero GroupNorm, which is what mmcv's
``ConvModule.init_weights`` leaves after the FPN's Xavier ``init_cfg`` (the children re-init last).
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.layers import ConvNormAct, kaiming_fan_out_


def conv_gn(in_channels: int, out_channels: int, kernel_size: int,
            num_groups: int = 32) -> ConvNormAct:
    """mmcv ``ConvModule(norm_cfg=GN, act_cfg=None)``: conv without bias -> GroupNorm (keys
    ``conv``, ``gn``), Kaiming-normal (fan_out) as mmcv's init."""
    if out_channels % num_groups:
        raise ValueError(f"GroupNorm: {out_channels} channels do not split into "
                         f"{num_groups} groups; pass num_groups dividing the neck width")
    block = ConvNormAct(in_channels, out_channels, kernel_size,
                        norm=functools.partial(nn.GroupNorm, num_groups), act=None,
                        names=("conv", "gn", "act"))
    kaiming_fan_out_(block.conv)
    return block


class FPN(nn.Module):
    """mmseg ``FPN`` with GN and no activation (see module docstring)."""

    def __init__(self, in_channels: list[int], out_channels: int = 256, num_groups: int = 32):
        super().__init__()
        self.in_channels = list(in_channels)
        self.lateral_convs = nn.ModuleList(conv_gn(c, out_channels, 1, num_groups)
                                           for c in in_channels)
        self.fpn_convs = nn.ModuleList(conv_gn(out_channels, out_channels, 3, num_groups)
                                       for _ in in_channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.lateral_convs):
            raise ValueError(f"FPN built for {len(self.lateral_convs)} levels, got {len(features)}")
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        for i in range(len(laterals) - 1, 0, -1):      # top-down, nearest as mmseg's default
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
        return [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]


class MultiStageMerging(nn.Module):
    """DDP's ``MultiStageMerging``: resize all levels to the first, concat, 1x1 conv + GN."""

    def __init__(self, in_channels: list[int], out_channels: int = 256, num_groups: int = 32):
        super().__init__()
        self.down = conv_gn(sum(in_channels), out_channels, 1, num_groups)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        merged = [features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                  for f in features[1:]]
        return self.down(torch.cat(merged, dim=1))


class FPNMergeNeck(nn.Module):
    """FPN -> MultiStageMerging: ``forward(features) -> (B, out_channels, H1, W1)``, the neck of
    the diffusion head (models/heads/diffusion.py). Not a registered head: it returns features,
    not logits."""

    def __init__(self, in_channels: list[int], out_channels: int = 256, num_groups: int = 32):
        super().__init__()
        self.out_channels = out_channels
        self.fpn = FPN(in_channels, out_channels, num_groups)
        self.merge = MultiStageMerging([out_channels] * len(in_channels), out_channels, num_groups)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.merge(self.fpn(features))
