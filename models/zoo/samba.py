"""Samba (Heliyon 2024, arXiv 2404.01705; zhuqinfeng1999/Samba): the Samba Mamba encoder with
UperNet and an FCN auxiliary head (``configs/_base_/models/samba_upernet.py``;
docs/models.md, "Samba").

    encoder   SambaEncoder (models/backbones/samba.py), stages 64/128/320/448 at base size
    head      UPerHead, channels 512, PPM (1, 2, 3, 6), dropout 0.1 (BN for SyncBN)
    aux head  FCNHead on stage 3 (320 -> 256, one 3x3 conv, dropout 0.1), CE weight 0.4,
              training only (``forward_train``); inference and the parameter count exclude it
    loss      CE on the main logits + 0.4 CE on the auxiliary logits, both resized to the label

The paper is single-modality (RGB remote-sensing images), so the default fusion is
``rgb_only``; any registered fusion works: early fusion (kind ``input``, e.g. ``early_concat``)
builds one encoder on the concatenated channels, mid fusion (kind ``stage``, e.g. ``wase``) two
encoders fused per stage, late fusion (``logits``) two full encoder-head paths (the auxiliary
head then reads stream a's stage 3).

Sizes: ``base`` is the paper's configuration; ``micro`` and ``nano`` are CPU-scale sizes of
ours (see ``SAMBA_SIZES``) with a narrower head (UPerHead 64 / 32 channels, FCN 32 / 16).

Measured at base size, 7 classes (tests/models/test_samba.py):
- parameters: encoder 22,650,720 + UPerHead 29,212,167 = 51,862,887 at inference (computed
  from upstream: 22.65M + 29.21M = 51.86M); the FCN auxiliary head adds 739,591 in training
  (upstream 0.74M).
- FLOPs, fvcore MACs at 1x3x512x512 in eval: "published" convention (scan skipped) 236.56G =
  encoder 27.00G + head 209.55G (docs/models.md: 27.0G + ~209G, ~236G; +0.24%, that head
  figure being a rounded estimate of the convolutions; ours also counts BN/LN, the PPM and the
  bilinear resizes as fvcore does); "full" convention (9BLDN + 2BDL per scan) 245.29G, the
  encoder 35.74G (upstream's 35.7G).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from models.backbones.samba import SambaEncoder
from models.encdec import FusionSegmenter
from models.heads.upernet import FCNHead, UPerHead
from models.registry import PublishedFigures, register_model

#: per size: UPerHead channels, FCN auxiliary head channels
SAMBA_HEAD_CHANNELS = {"base": (512, 256), "micro": (64, 32), "nano": (32, 16)}

#: mmseg EncoderDecoder prefixes -> ours, for upstream checkpoints (single-stream fusions)
MMSEG_PREFIXES = {"backbone.": "encoder_a.", "decode_head.": "head.",
                  "auxiliary_head.": "aux_head."}


#: Samba trains from scratch: its configs load no pretrained weights, so ``init: {backbone:}``
#: is refused for it (a whole-model ``init: {checkpoint:}`` still works).
FROM_SCRATCH = "Samba's configs (zhuqinfeng1999/Samba) load no pretrained weights"


class SambaUperNet(FusionSegmenter):
    def __init__(self, size: str, num_classes: int, fusion: Any = "rgb_only",
                 modalities: dict[str, int] | None = None, aux_weight: float = 0.4,
                 aux_stage: int = 2, mix_token: bool = False, upstream_init: bool = False,
                 shared_encoder: bool = False, fusion_kwargs: dict | None = None,
                 ignore_index: int = 255):
        head_channels, aux_channels = SAMBA_HEAD_CHANNELS[size]
        super().__init__(
            lambda in_chans: SambaEncoder(in_chans, size=size, mix_token=mix_token,
                                          upstream_init=upstream_init),
            lambda in_channels: UPerHead(in_channels, num_classes, channels=head_channels),
            fusion, num_classes, modalities=modalities, shared_encoder=shared_encoder,
            fusion_kwargs=fusion_kwargs, ignore_index=ignore_index,
        )
        self.aux_weight = aux_weight
        self.aux_head = (FCNHead(list(self.encoder_a.out_channels), num_classes,
                                 in_index=aux_stage, channels=aux_channels)
                         if aux_weight > 0 else None)

    def forward_train(self, inputs: dict[str, torch.Tensor], target: torch.Tensor,
                      state: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
        size = target.shape[-2:]
        if self.fusion.kind == "logits":
            features = self.encoder_a(inputs[self.key_a])
            logits_b = F.interpolate(self.head_b(self._encode_b(inputs[self.key_b])), size=size,
                                     mode="bilinear", align_corners=False)
            logits = self.fusion.fuse_logits(self.decode(features, size), logits_b)
        else:
            features = self.extract(inputs)
            logits = self.decode(features, size)
        loss_decode = F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        out = {"loss": loss_decode, "loss_decode": loss_decode}
        if self.aux_head is not None:
            aux_logits = F.interpolate(self.aux_head(features), size=size, mode="bilinear",
                                       align_corners=False)
            loss_aux = F.cross_entropy(aux_logits, target, ignore_index=self.ignore_index)
            out["loss_aux"] = loss_aux
            out["loss"] = loss_decode + self.aux_weight * loss_aux
        return out

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor], model=None):
        """Rename an mmseg ``EncoderDecoder`` checkpoint's keys to ours (other keys as they are)."""
        renamed = {}
        for key, value in state_dict.items():
            for old, new in MMSEG_PREFIXES.items():
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
            renamed[key] = value
        return renamed


def _build(size: str, num_classes: int, fusion: Any, modalities, **kwargs) -> SambaUperNet:
    return SambaUperNet(size, num_classes, fusion=fusion, modalities=modalities, **kwargs)


@register_model(default_fusion="rgb_only", published=PublishedFigures(
    "Samba", inputs={"rgb": (1, 3, 512, 512)}, params_m=51.86, gmacs={"published": 236.0},
    kwargs={"num_classes": 7}, exclude_params=("aux_head.",), tol_params=0.01,
    source="docs/models.md, 'Samba' (UperNet at 512², 7 classes, inference: the auxiliary "
           "FCN head is not counted; the ~236G is an estimate, see docs/models.md)"))
def samba_base(num_classes: int = 7, fusion: Any = "rgb_only", modalities=None, **kwargs):
    """The paper's configuration (LoveDA: 7 classes)."""
    return _build("base", num_classes, fusion, modalities, **kwargs)


@register_model
def samba_micro(num_classes: int = 7, fusion: Any = "rgb_only", modalities=None, **kwargs):
    return _build("micro", num_classes, fusion, modalities, **kwargs)


@register_model
def samba_nano(num_classes: int = 7, fusion: Any = "rgb_only", modalities=None, **kwargs):
    return _build("nano", num_classes, fusion, modalities, **kwargs)
