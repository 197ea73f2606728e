"""dualcnn: two small CNN streams, any fusion, a light FPN head. The CPU-scale baseline family
the fusion ablation is built on (nano / micro / tiny widths in models/backbones/cnn.py)."""
from __future__ import annotations

from functools import partial

from models.backbones.cnn import CNN_WIDTHS, ConvEncoder
from models.encdec import FusionSegmenter
from models.heads.light import LightHead
from models.registry import register_model

HEAD_WIDTH = {"nano": 16, "micro": 32, "tiny": 64}


#: ssmbench's own CNN baseline: no published ImageNet initialisation
FROM_SCRATCH = "dualcnn is ssmbench's CPU-scale CNN baseline, with no ImageNet checkpoint"


def _create_dualcnn(size: str, fusion: str | None = None, num_classes: int = 9,
                    modalities: dict[str, int] | None = None,
                    fusion_kwargs: dict | None = None) -> FusionSegmenter:
    return FusionSegmenter(
        make_encoder=lambda c: ConvEncoder(c, CNN_WIDTHS[size]),
        make_head=partial(_head, num_classes=num_classes, width=HEAD_WIDTH[size]),
        fusion=fusion or "concat_conv",
        num_classes=num_classes,
        modalities=modalities or {"rgb": 3, "x": 1},
        fusion_kwargs=fusion_kwargs,
    )


def _head(in_channels, num_classes, width):
    return LightHead(in_channels, num_classes, width)


@register_model(default_fusion="concat_conv")
def dualcnn_nano(**kwargs):
    return _create_dualcnn("nano", **kwargs)


@register_model(default_fusion="concat_conv")
def dualcnn_micro(**kwargs):
    return _create_dualcnn("micro", **kwargs)


@register_model(default_fusion="concat_conv")
def dualcnn_tiny(**kwargs):
    return _create_dualcnn("tiny", **kwargs)
