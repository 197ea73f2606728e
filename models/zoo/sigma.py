"""Sigma (WACV 2025, arXiv 2404.04256; zifuwan/Sigma; docs/models.md, "Sigma").

    encoder   one VMamba-v0 encoder (models/backbones/vmamba.py) applied to RGB and to X
              (siamese: one set of weights, outnorms included); X with one channel is tiled to
              three, as Sigma's loader replicates a grayscale thermal/depth image
    fusion    CroMB then ConMB at every stage (models/fusion/sigma.py, fusion "sigma")
    head      the channel-aware Mamba decoder (models/heads/sigma_decoder.py), x4 upsampling,
              1x1 classifier; logits resized to the input (bilinear), as ``encode_decode``
    loss      CE (mean, ignore 255) on full-resolution logits, no auxiliary head

Sizes (drop path as Sigma's ``vssm_{tiny,small,base}``): tiny VMamba-T 0.2, small VMamba-S 0.3,
base VMamba-B 0.6; nano / micro are CPU-scale sizes of ours on the ``nano`` / ``micro`` VMamba
configurations (decoder depth 1 / 2 per stage instead of 4, d_state 4 as upstream).

Any registered fusion can replace "sigma" (``fusion="add"``, ``"conmb"``, ``"early_concat"`` ...)
with the same encoder and decoder; ``shared_encoder=False`` gives each modality its own encoder.

Checkpoints: ``load_pretrained(model, "sigma_tiny_mfnet.pth")`` maps upstream's names with
``checkpoint_filter_fn`` (prefixes only: ``backbone.vssm.`` -> ``encoder_a.``,
``backbone.cross_mamba.`` / ``backbone.channel_attn_mamba.`` -> ``fusion.``, ``decode_head.`` ->
``head.``); below the prefixes every name is upstream's. ``load_backbone(model, path)`` loads a
VMamba classification checkpoint (``vssmtiny_dp01_ckpt_epoch_292.pth``) into the encoder the way
upstream's ``Backbone_VSSM.load_pretrained`` does: the backbone keys, the classifier and the
(absent) outnorms reported.

Measured (tests/models/test_sigma.py, bench/reporting/zoo_report.py; reports/model_zoo/README.md), T
/ S / B with 9 classes: parameters 48,287,360 / 69,811,328 / 121,414,820, equal to the official
state dicts (paper 48.29M / 69.81M / 121.42M); GMACs at two 3x480x640 inputs, scan not counted
(Sigma's ``flops()``) 89.48 / 138.86 / 240.65 (paper 89.49 / 138.88 / 240.67), scan counted as 9BLDN
+ BDL 118.35 / 186.98 / 304.81 (computed from upstream: 118.4 / 187.0 / 304.8).
"""
from __future__ import annotations

from typing import Any

import torch

from models.backbones.vmamba import VMambaEncoder
from models.encdec import FusionSegmenter
from models.heads.sigma_decoder import MambaDecoder
from models.pretrained import LoadReport, match_state, read_state_dict
from models.registry import PublishedFigures, register_model

#: per size: VMamba config, encoder drop path, decoder blocks per stage
SIGMA_SIZES = {
    "tiny": ("tiny", 0.2, 4),
    "small": ("small", 0.3, 4),
    "base": ("base", 0.6, 4),
    "micro": ("micro", 0.1, 2),
    "nano": ("nano", 0.0, 1),
}

#: upstream ``EncoderDecoder`` prefixes -> ours (Sigma's fusion, shared encoder)
SIGMA_PREFIXES = {
    "backbone.vssm.": "encoder_a.",
    "backbone.cross_mamba.": "fusion.cross_mamba.",
    "backbone.channel_attn_mamba.": "fusion.channel_attn_mamba.",
    "decode_head.": "head.",
}


class Sigma(FusionSegmenter):
    def __init__(self, size: str, num_classes: int = 9, fusion: Any = "sigma",
                 modalities: dict[str, int] | None = None, shared_encoder: bool = True,
                 drop_path_rate: float | None = None, decoder_drop_path_rate: float = 0.1,
                 fusion_kwargs: dict | None = None, ignore_index: int = 255):
        if size not in SIGMA_SIZES:
            raise KeyError(f"unknown Sigma size {size!r}; known: {', '.join(SIGMA_SIZES)}")
        config, dp, depth = SIGMA_SIZES[size]
        dp = dp if drop_path_rate is None else drop_path_rate
        super().__init__(
            lambda in_chans: VMambaEncoder(in_chans=in_chans, config=config, drop_path_rate=dp),
            lambda in_channels: MambaDecoder(in_channels, num_classes, depth=depth,
                                             drop_path_rate=decoder_drop_path_rate),
            fusion or "sigma", num_classes, modalities=modalities or {"rgb": 3, "x": 1},
            shared_encoder=shared_encoder, fusion_kwargs=fusion_kwargs,
            ignore_index=ignore_index,
        )
        self.size = size

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor], model=None):
        """Rename an upstream Sigma checkpoint's keys to ours (other keys pass unchanged)."""
        renamed = {}
        for key, value in state_dict.items():
            for old, new in SIGMA_PREFIXES.items():
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
            renamed[key] = value
        return renamed


def load_backbone(model: Sigma, path, strict: bool = True, ema: bool = False,
                  allow_pickle: bool = True) -> LoadReport:
    """Load a VMamba classification checkpoint (``{"model": state_dict}``) into the encoder(s),
    as upstream ``Backbone_VSSM.load_pretrained``: the ``classifier.*`` keys are not used and
    the per-stage ``outnorm{i}`` keep their initialisation. With ``strict``, raise if any
    backbone key is missing or mismatched. The suite key ``init: {backbone: PATH}`` calls it
    (Sigma trains from ``vssm{tiny,small,base}_dp0*_ckpt_epoch_*.pth``)."""
    notes: list[str] = []
    state = read_state_dict(path, ema=ema, allow_pickle=allow_pickle, notes=notes)
    report = LoadReport(str(path), notes=notes)
    encoders = [model.encoder_a] + ([model.encoder_b] if hasattr(model, "encoder_b") else [])
    for encoder in encoders:
        own = encoder.state_dict()
        usable = match_state(own, state, report)
        report.missing += [k for k in own if k not in state and not k.startswith("outnorm")]
        encoder.load_state_dict(usable, strict=False)
    report.unexpected = sorted(set(report.unexpected))
    classifier_only = all(k.startswith("classifier.") for k in report.unexpected)
    if strict and (report.missing or report.mismatched or not classifier_only):
        raise ValueError("VMamba checkpoint does not match Sigma's encoder:\n" + report.summary())
    return report


#: the published measurement: two 3x480x640 images, the 9-class head
_SIGMA_IN = {"rgb": (1, 3, 480, 640), "x": (1, 3, 480, 640)}
_SIGMA_SRC = "docs/models.md, 'Sigma' (fvcore as Sigma's EncoderDecoder.flops(), 9-class head)"


def _published(system: str, params_m: float, gmacs: dict[str, float]) -> PublishedFigures:
    return PublishedFigures(system, inputs=_SIGMA_IN, params_m=params_m, gmacs=gmacs,
                            kwargs={"num_classes": 9}, source=_SIGMA_SRC)


def _create_sigma(size: str, **kwargs) -> Sigma:
    return Sigma(size, **kwargs)


@register_model(default_fusion="sigma",
                published=_published("Sigma-T", 48.29, {"published": 89.49, "full": 118.4}))
def sigma_tiny(**kwargs):
    """Sigma-T: VMamba-T (2,2,9,2 x 96), 48.29M parameters with 9 classes."""
    return _create_sigma("tiny", **kwargs)


@register_model(default_fusion="sigma",
                published=_published("Sigma-S", 69.81, {"published": 138.88, "full": 187.0}))
def sigma_small(**kwargs):
    """Sigma-S: VMamba-S (2,2,27,2 x 96), 69.81M parameters with 9 classes."""
    return _create_sigma("small", **kwargs)


@register_model(default_fusion="sigma",
                published=_published("Sigma-B", 121.42, {"published": 240.67, "full": 304.8}))
def sigma_base(**kwargs):
    """Sigma-B: VMamba-B (2,2,27,2 x 128), 121.42M parameters with 9 classes."""
    return _create_sigma("base", **kwargs)


@register_model(default_fusion="sigma")
def sigma_micro(**kwargs):
    """CPU-scale Sigma of ours: VMamba micro (1,1,3,1 x 32), decoder depth 2."""
    return _create_sigma("micro", **kwargs)


@register_model(default_fusion="sigma")
def sigma_nano(**kwargs):
    """CPU-scale Sigma of ours: VMamba nano (1,1,2,1 x 16), decoder depth 1."""
    return _create_sigma("nano", **kwargs)
