"""Weight initialisations that several upstream code bases share."""
from __future__ import annotations

import math

import torch.nn as nn


def fan_out_normal_(conv: nn.Conv2d) -> None:
    """normal(0, sqrt(2 / fan_out)) weights, zero bias, fan_out = k_h k_w C_out / groups (the
    conv branch of PVTv2's ``_init_weights``, which Samba and ReMamber's conv head copy)."""
    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    fan_out //= conv.groups
    conv.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
    if conv.bias is not None:
        conv.bias.data.zero_()


def kaiming_fan_out_(conv: nn.Conv2d) -> None:
    """mmcv ``ConvModule.init_weights``: Kaiming-normal (fan_out, ReLU) weights, zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def trunc_normal_init_(module: nn.Module, conv_fan_out: bool = False,
                       keep_no_reinit: bool = False) -> None:
    """For ``model.apply``: Linear trunc_normal(0.02) with zero bias, LayerNorm (1, 0) (VMamba
    ``VSSM._init_weights``, Swin's); with ``conv_fan_out`` also Conv2d ``fan_out_normal_``
    (Samba's ``_init_weights``, PVTv2's). With ``keep_no_reinit``, a Linear whose bias carries
    ``_no_reinit`` (mamba_simple's dt_proj) keeps its initialisation."""
    if isinstance(module, nn.Linear):
        if keep_no_reinit and getattr(module.bias, "_no_reinit", False):
            return
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif conv_fan_out and isinstance(module, nn.Conv2d):
        fan_out_normal_(module)
