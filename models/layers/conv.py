"""Convolution -> normalisation -> activation, the block every CNN part here is built from."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch.nn as nn

#: mmcv ``ConvModule``'s child names (mmseg checkpoints' ``*.conv``, ``*.bn``, ``*.activate``)
MMCV_NAMES = ("conv", "bn", "activate")


class ConvNormAct(nn.Sequential):
    """conv (``kernel_size``, ``stride``, ``dilation``, ``groups``) -> ``norm(out_channels)`` ->
    ``act()``; ``norm`` / ``act`` None leave that step out.

    ``padding`` defaults to ``dilation * (kernel_size - 1) // 2`` (same size at stride 1);
    ``bias`` defaults to mmcv's rule, a bias only without a norm. The children are keyed
    ``0``, ``1``, ``2`` (an ``nn.Sequential``, as torchvision's ``Conv2dNormActivation``), or by
    ``names`` (conv, norm, act), e.g. ``MMCV_NAMES``, so each copy this replaced keeps its
    checkpoint keys. ``norm`` and ``act`` are module classes or partials."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int | None = None, dilation: int = 1, groups: int = 1,
                 bias: bool | None = None,
                 norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
                 act: Callable[[], nn.Module] | None = nn.ReLU,
                 names: tuple[str, str, str] | None = None):
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        if bias is None:
            bias = norm is None
        layers = [("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                     dilation, groups, bias=bias))]
        if norm is not None:
            layers.append(("norm", norm(out_channels)))
        if act is not None:
            layers.append(("act", act()))
        if names is None:
            super().__init__(*(module for _, module in layers))
        else:
            rename = dict(zip(("conv", "norm", "act"), names))
            super().__init__(OrderedDict((rename[role], module) for role, module in layers))
