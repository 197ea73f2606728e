"""ResNet-50 truncated after layer3, MS2MNet's encoder stream (DrWuHonglin/MS2MNet
``models/MS2MNet.py``, class ``ResNet50``; docs/models.md, "MS2MNet").

torchvision's ResNet v1.5 (stride on the 3x3 conv of the bottleneck) with torchvision's
parameter names (``conv1``, ``bn1``, ``layer{i}.{j}.conv{1,2,3}``, ``bn{1,2,3}``,
``downsample.{0,1}``), so an ImageNet ``resnet50`` state dict loads through
``checkpoint_filter_fn`` (``models.load_pretrained(encoder, path)``): ``layer4`` and ``fc`` are
dropped and a stem with other than 3 input channels is adapted. For one channel (MS2MNet's DSM
stream) the kernel is the channel mean of the RGB kernel, as upstream does.

``forward(x) -> [stem@H/2 (after ReLU, before max-pool), layer1@H/4, layer2@H/8,
layer3@H/16]``: 64/256/512/1024 channels at base size. Upstream's wrapper also keeps the unused
``layer4`` (15M parameters per stream that never run); this encoder does not build it.

Sizes (``RESNET_SIZES``): ``base`` is ResNet-50; ``micro`` and ``nano`` are CPU-scale
width-reduced ResNets of ours (stem width 16 / 8, one or two bottlenecks per layer).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.registry import register_encoder

RESNET_SIZES: dict[str, dict] = {
    "base": dict(layers=(3, 4, 6), width=64),   # ResNet-50, layer1..layer3
    "micro": dict(layers=(1, 1, 2), width=16),  # ours: 16/64/128/256 channels
    "nano": dict(layers=(1, 1, 1), width=8),    # ours: 8/32/64/128 channels
}
EXPANSION = 4  # torchvision Bottleneck.expansion


class Bottleneck(nn.Module):
    """torchvision ``Bottleneck`` (v1.5): 1x1 -> 3x3 (stride) -> 1x1 (x4), identity or
    1x1-BN projection shortcut."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def adapt_stem_kernel(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """An RGB stem kernel (O, 3, k, k) for ``in_chans`` inputs: the channel mean for one
    channel (MS2MNet: ``mean(conv1.weight, dim=1)``), else the mean tiled and scaled by
    3 / in_chans so that the response to a constant image is unchanged."""
    if weight.shape[1] == in_chans:
        return weight
    mean = weight.mean(dim=1, keepdim=True)
    if in_chans == 1:
        return mean
    return mean.repeat(1, in_chans, 1, 1) * (weight.shape[1] / in_chans)


@register_encoder("resnet50_l3")
class ResNetEncoder(nn.Module):
    """ResNet stem + ``len(layers)`` bottleneck layers (three: truncated after layer3).

    ``size`` picks a preset of ``RESNET_SIZES``; ``layers``/``width`` override it (four layers
    with width 64 and (3, 4, 6, 3) is the whole torchvision ResNet-50 trunk)."""

    def __init__(self, in_chans: int = 3, size: str = "base", layers=None,
                 width: int | None = None):
        super().__init__()
        if size not in RESNET_SIZES:
            raise ValueError(f"unknown ResNet size {size!r}; known: {', '.join(RESNET_SIZES)}")
        layers = tuple(layers or RESNET_SIZES[size]["layers"])
        width = width or RESNET_SIZES[size]["width"]
        self.in_chans = in_chans
        self.conv1 = nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.out_channels = [width]
        in_channels = width
        for i, blocks in enumerate(layers):
            planes = width * 2 ** i
            stride = 1 if i == 0 else 2
            layer = [Bottleneck(in_channels, planes, stride)]
            in_channels = planes * EXPANSION
            layer += [Bottleneck(in_channels, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            self.out_channels.append(in_channels)
        self.num_layers = len(layers)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        outs = [x]
        x = self.maxpool(x)
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i + 1}")(x)
            outs.append(x)
        return outs

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor], model=None):
        """A torchvision ResNet state dict -> this encoder: drop the layers it does not build
        (``layer4``, ``fc``) and adapt the stem kernel to ``in_chans``."""
        own = self.state_dict()
        kept = {k: v for k, v in state_dict.items()
                if k in own or not (k.startswith("fc.") or k.split(".")[0].startswith("layer"))}
        if "conv1.weight" in kept:
            kept["conv1.weight"] = adapt_stem_kernel(kept["conv1.weight"], self.in_chans)
        return kept
