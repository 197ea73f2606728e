"""A small convolutional encoder for CPU-scale baselines (four stride-2 stages).

Each stage is conv3x3 (stride 2) - BN - ReLU - conv3x3 - BN - ReLU, so the features are at
strides 2, 4, 8 and 16. At SynRGBX's 64 px the last stage sees the whole image, which the
dataset's relative-height classes need (docs/datasets.md: only local contrast separates low from
high objects).
"""
from __future__ import annotations

import functools

import torch.nn as nn

from models.layers import ConvNormAct
from models.registry import register_encoder

CNN_WIDTHS = {
    "nano": (8, 16, 32, 64),
    "micro": (16, 32, 64, 128),
    "tiny": (32, 64, 128, 256),
}


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> ConvNormAct:
    return ConvNormAct(c_in, c_out, 3, stride, act=functools.partial(nn.ReLU, inplace=True))


@register_encoder("cnn")
class ConvEncoder(nn.Module):
    def __init__(self, in_chans: int = 3, widths: tuple[int, ...] = CNN_WIDTHS["micro"]):
        super().__init__()
        self.in_chans = in_chans
        self.out_channels = list(widths)
        stages, c_in = [], in_chans
        for width in widths:
            stages.append(nn.Sequential(conv_bn_relu(c_in, width, 2), conv_bn_relu(width, width)))
            c_in = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
