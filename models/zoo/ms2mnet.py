"""MS2MNet (DrWuHonglin/MS2MNet; docs/models.md, "MS2MNet"): RGB + DSM semantic segmentation
of ISPRS Vaihingen / Potsdam.

    DSM     -> DFE (gradient enhancement, 1 channel out)
    streams -> two ResNet-50s truncated after layer3 (models/backbones/resnet.py);
               the DSM stream's 1-channel stem is the channel mean of the RGB ImageNet kernel
    fusion  -> ``wase+vfe`` per stage: WASE, then f + 0.5 VFE(f) (models/fusion/wase.py)
    decoder -> HFP decoder with ASAF and the MAF head, two deep-supervision heads
               (models/heads/hfp.py)
    loss    -> staged (below), in ``forward_train``

Loss (upstream ``DeepSupervisionLoss`` in ``models/utils.py`` and ``train_MS2MNet.py``):
main = CE + a_f Focal(gamma 2, alpha 0.25) + a_b BoundaryCE + a_l Lovasz (models/losses.py);
each auxiliary output adds aux_w[i] (0.5 CE + 0.5 Focal) (CE alone when a_f = 0). Curriculum
on the 1-based epoch ``state["epoch"]`` (upstream's loop counts from 1): epochs <= 30 use
(a_f, 0, 0), <= 60 (0.8 a_f, a_b, 0), later (0.6 a_f, a_b, 0.2); without an epoch in
``state`` the first phase applies. Per dataset (a_f, a_b, aux_w): Vaihingen 0.6, 0.4,
[0.3, 0.2] (the default, upstream's active setting); Potsdam 0.7, 0.3, [0.4, 0.2].

**Reconstructed**: DFE (here), VFE/MSSM and ASAF are called but not defined by the release.
Our reading of the DFE figure: Sobel gradients (gx, gy) and their magnitude are stacked with
the DSM, a 3x3 conv-BN-ReLU (16) and a 1x1 conv map them to a 1-channel correction added to the
DSM; the 1x1 conv starts at zero, so DFE starts as the identity and the pretrained-kernel
initialisation of the DSM stem sees the raw DSM at first. DFE runs on the auxiliary stream of
two-stream fusions only.

Sizes: ``base`` is the paper's (ResNet-50 streams, decoder 256 wide, 16 heads, 16x16 pooled
keys, 256x256 crops); ``micro``/``nano`` are CPU-scale sizes of ours (width-reduced ResNets,
narrow decoder, 4 heads, 4x4 pooled keys).

No parameter or FLOP figure is published (upstream's demo counts with thop and the README gives
no value). Measured at base size, 6 classes (tests/models/test_ms2mnet.py):
- parameters: 52,846,024 in training = RGB stream 8,543,296 + DSM stream 8,537,024 + fusion
  29,560,892 (WASE 349,040; VFE 92,545 / 1,404,273 / 5,565,081 / 22,149,953) + decoder
  6,204,187 + DFE 625; 51,662,268 at inference (the two auxiliary heads hold 1,183,756).
  Upstream's wrapper also keeps each stream's unused layer4 (14,964,736 parameters), which a
  thop count of the released model would include.
- FLOPs, fvcore MACs at RGB 1x3x256^2 + DSM 1x1x256^2 in eval: 36.81G in both conventions (no
  selective scan): streams 4.31G + 4.21G, fusion 15.41G, decoder 12.84G, DFE 0.04G. thop counts
  module hooks only, so it would miss the functional matmuls (attention, MSSM: 0.84G here).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.backbones.resnet import ResNetEncoder
from models.encdec import FusionSegmenter
from models.heads.hfp import HFPDecoder
from models.losses import SOBEL_X, SOBEL_Y, combined_seg_loss, cross_entropy, focal_loss
from models.pretrained import LoadReport, load_pretrained
from models.registry import PublishedFigures, register_model

#: per-dataset loss weights: (alpha_focal, alpha_boundary, aux_weights), train_MS2MNet.py
LOSS_PRESETS = {
    "vaihingen": dict(alpha_focal=0.6, alpha_boundary=0.4, aux_weights=(0.3, 0.2)),
    "potsdam": dict(alpha_focal=0.7, alpha_boundary=0.3, aux_weights=(0.4, 0.2)),
}
#: curriculum phase ends (last epoch of phases 1 and 2) and the late Lovasz weight
CURRICULUM_EPOCHS = (30, 60)
LATE_LOVASZ_WEIGHT = 0.2

#: HFP decoder settings per size
HFP_SIZES = {
    "base": dict(decode_channels=256, num_heads=16, pool_size=16, aux_channels=256),
    "micro": dict(decode_channels=64, num_heads=4, pool_size=4, aux_channels=32),
    "nano": dict(decode_channels=32, num_heads=4, pool_size=4, aux_channels=16),
}


def loss_weights_for_epoch(epoch: int | None, alpha_focal: float,
                           alpha_boundary: float) -> tuple[float, float, float]:
    """(a_f, a_b, a_l) of the main loss at 1-based ``epoch`` (None: the first phase)."""
    early_end, middle_end = CURRICULUM_EPOCHS
    if epoch is None or epoch <= early_end:
        return alpha_focal, 0.0, 0.0
    if epoch <= middle_end:
        return 0.8 * alpha_focal, alpha_boundary, 0.0
    return 0.6 * alpha_focal, alpha_boundary, LATE_LOVASZ_WEIGHT


class DSMGradientEnhancement(nn.Module):
    """DFE (reconstructed; see module docstring): dsm + conv([dsm, gx, gy, |grad|])."""

    def __init__(self, in_chans: int = 1, hidden: int = 16):
        super().__init__()
        self.register_buffer("sobel", torch.tensor([SOBEL_X, SOBEL_Y]).unsqueeze(1)
                             .repeat(in_chans, 1, 1, 1), persistent=False)
        self.in_chans = in_chans
        self.correction = nn.Sequential(
            nn.Conv2d(4 * in_chans, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True), nn.Conv2d(hidden, in_chans, 1))
        nn.init.zeros_(self.correction[-1].weight)
        nn.init.zeros_(self.correction[-1].bias)

    def gradients(self, dsm: torch.Tensor) -> torch.Tensor:
        """Sobel (gx, gy) per channel with replicated borders -> (B, 2*C, H, W)."""
        return F.conv2d(F.pad(dsm, (1, 1, 1, 1), mode="replicate"), self.sobel.to(dsm.dtype),
                        groups=self.in_chans)

    def forward(self, dsm: torch.Tensor) -> torch.Tensor:
        grads = self.gradients(dsm)
        gx, gy = grads[:, 0::2], grads[:, 1::2]
        magnitude = torch.sqrt(gx ** 2 + gy ** 2 + 1e-6)
        return dsm + self.correction(torch.cat([dsm, gx, gy, magnitude], dim=1))


class MS2MNet(FusionSegmenter):
    def __init__(self, size: str, num_classes: int, fusion: Any = "wase+vfe",
                 modalities: dict[str, int] | None = None, loss_preset: str = "vaihingen",
                 alpha_focal: float | None = None, alpha_boundary: float | None = None,
                 aux_weights=None, use_dfe: bool = True, pretrained_backbone: str | None = None,
                 shared_encoder: bool = False, fusion_kwargs: dict | None = None,
                 ignore_index: int = 255):
        if loss_preset not in LOSS_PRESETS:
            raise ValueError(f"unknown MS2MNet loss preset {loss_preset!r}; known: "
                             f"{', '.join(LOSS_PRESETS)}")
        modalities = modalities or {"rgb": 3, "x": 1}
        super().__init__(
            lambda in_chans: ResNetEncoder(in_chans, size=size),
            lambda in_channels: HFPDecoder(in_channels, num_classes, **HFP_SIZES[size]),
            fusion, num_classes, modalities=modalities, shared_encoder=shared_encoder,
            fusion_kwargs=fusion_kwargs, ignore_index=ignore_index,
        )
        preset = LOSS_PRESETS[loss_preset]
        self.alpha_focal = preset["alpha_focal"] if alpha_focal is None else alpha_focal
        self.alpha_boundary = preset["alpha_boundary"] if alpha_boundary is None else alpha_boundary
        self.aux_weights = tuple(preset["aux_weights"] if aux_weights is None else aux_weights)
        two_streams = self.fusion.kind in ("stage", "logits")
        self.dfe = (DSMGradientEnhancement(list(modalities.values())[1])
                    if use_dfe and two_streams else None)
        if pretrained_backbone is not None:
            self.load_imagenet_backbones(pretrained_backbone)

    def _encode_b(self, x: torch.Tensor) -> list[torch.Tensor]:
        return super()._encode_b(self.dfe(x) if self.dfe is not None else x)

    def load_imagenet_backbones(self, path: str | Path) -> None:
        """Load a torchvision ImageNet ResNet-50 state dict into every ResNet stream; a stream
        with one input channel gets the channel mean of the RGB stem kernel (upstream)."""
        for name in ("encoder_a", "encoder_b"):
            encoder = getattr(self, name, None)
            if encoder is not None:
                load_pretrained(encoder, path, strict=True)

    def loss_weights(self, state: dict[str, Any] | None) -> tuple[float, float, float]:
        epoch = (state or {}).get("epoch")
        return loss_weights_for_epoch(epoch, self.alpha_focal, self.alpha_boundary)

    def forward_train(self, inputs: dict[str, torch.Tensor], target: torch.Tensor,
                      state: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
        size = target.shape[-2:]
        if self.fusion.kind == "logits":  # two decoders: no single set of auxiliary outputs
            main, aux_logits = self(inputs), []
        else:
            main, aux_logits = self.head.forward_with_aux(self.extract(inputs))
            main = F.interpolate(main, size=size, mode="bilinear", align_corners=False)
        a_f, a_b, a_l = self.loss_weights(state)
        out = combined_seg_loss(main, target, a_f, a_b, a_l, ignore_index=self.ignore_index)
        total = out["loss"]
        for i, (logits, weight) in enumerate(zip(aux_logits, self.aux_weights)):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            aux = cross_entropy(logits, target, ignore_index=self.ignore_index)
            if a_f > 0:
                aux = 0.5 * aux + 0.5 * focal_loss(logits, target, ignore_index=self.ignore_index)
            out[f"aux{i}"] = aux
            total = total + weight * aux
        out["main"] = out["loss"]
        out["loss"] = total
        return out

    # ---------------------------------------------------------------- upstream checkpoints
    #: upstream (DrWuHonglin/MS2MNet ``models/MS2MNet.py`` ``MS2MNet.state_dict()``) -> ours,
    #: for the parts the release defines; applied in order, the first match wins
    UPSTREAM_RENAMES = (
        (r"^rgb_backbone\.", "encoder_a."),
        (r"^dsm_backbone\.", "encoder_b."),
        (r"^waseFusion(\d)\.weight_x$", lambda m: f"fusion.wase.{int(m[1]) - 1}.weight_a"),
        (r"^waseFusion(\d)\.weight_y$", lambda m: f"fusion.wase.{int(m[1]) - 1}.weight_b"),
        (r"^waseFusion(\d)\.fc_([xy])\.([02])\.",
         lambda m: f"fusion.wase.{int(m[1]) - 1}.gate_{'a' if m[2] == 'x' else 'b'}."
                   f"{int(m[3]) + 1}."),
        (r"^decoder\.Conv1\.", "head.reduce_f4."),
        (r"^decoder\.Conv2\.", "head.reduce_f3."),
        (r"^decoder\.Conv3\.", "head.reduce_to_f1."),
        # HFP blocks: MSC pyramid, channel attention, kv, the MLP's depthwise convs
        (r"^decoder\.b(\d)\.attn\.MSC\.(conv|bn)0_1\.",
         lambda m: f"head.block{m[1]}.attn.pyramid.reduce.{0 if m[2] == 'conv' else 1}."),
        (r"^decoder\.b(\d)\.attn\.MSC\.(conv|bn)([012])_([23])\.",
         lambda m: f"head.block{m[1]}.attn.pyramid.dilated.{m[3]}.{int(m[4]) - 2}."
                   f"{0 if m[2] == 'conv' else 1}."),
        (r"^decoder\.b(\d)\.attn\.MSC\.(conv|bn)3_([23])\.",
         lambda m: f"head.block{m[1]}.attn.pyramid.pointwise.{int(m[3]) - 2}."
                   f"{0 if m[2] == 'conv' else 1}."),
        (r"^decoder\.b(\d)\.attn\.MSC\.(conv|bn)4\.",
         lambda m: f"head.block{m[1]}.attn.pyramid.merge.{0 if m[2] == 'conv' else 1}."),
        (r"^decoder\.b(\d)\.attn\.fc\.([02])\.",
         lambda m: f"head.block{m[1]}.attn.channel_attention.{int(m[2]) + 1}."),
        (r"^decoder\.b(\d)\.attn\.kv\.0\.", r"head.block\1.attn.kv."),
        (r"^decoder\.b(\d)\.mlp\.conv1\.", r"head.block\1.mlp.dw5."),
        (r"^decoder\.b(\d)\.mlp\.conv2\.", r"head.block\1.mlp.dw3."),
        (r"^decoder\.b(\d)\.", r"head.block\1."),
        # the MAF segmentation head
        (r"^decoder\.seg_head\.(conv|bn)0\.",
         lambda m: f"head.seg_head.reduce.{0 if m[1] == 'conv' else 1}."),
        (r"^decoder\.seg_head\.(conv|bn)([123])_([12])\.",
         lambda m: f"head.seg_head.dilated.{int(m[2]) - 1}.{int(m[3]) - 1}."
                   f"{0 if m[1] == 'conv' else 1}."),
        (r"^decoder\.seg_head\.(conv|bn)4\.",
         lambda m: f"head.seg_head.merge.{0 if m[1] == 'conv' else 1}."),
        (r"^decoder\.seg_head\.fc\.([02])\.",
         lambda m: f"head.seg_head.channel_attention.{int(m[1]) + 1}."),
        (r"^decoder\.seg_head\.s_conv\.", "head.seg_head.spatial_attention.conv."),
        (r"^decoder\.seg_head\.head\.0\.([01])\.", r"head.seg_head.classify.\1."),
        (r"^decoder\.seg_head\.head\.0\.([23])\.",
         lambda m: f"head.seg_head.classify.2.{int(m[1]) - 2}."),
        (r"^decoder\.seg_head\.head\.2\.0\.", "head.seg_head.classify.4."),
        (r"^decoder\.aux_head([23])\.", r"head.aux_head\1."),
    )

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor], model=None):
        """Rename an upstream MS2MNet checkpoint's keys to ours. The ResNet streams' layer4 is
        dropped (upstream builds and saves it but never runs it; ours is truncated after
        layer3). The VFE (``vfeBlock*``), ASAF (``decoder.p1-3``) and DFE (``dfeBlock``)
        tensors keep their names: the release uses those modules without defining them, so
        their layout is unknown and ssmbench's reconstructions (``fusion.vfe``,
        ``head.fuse*``, ``dfe``) cannot claim to match; a strict load names them. Keys
        already in ssmbench's layout pass unchanged."""
        renamed = {}
        for key, value in state_dict.items():
            if re.match(r"^(rgb|dsm)_backbone\.layer4\.", key):
                continue
            for pattern, repl in self.UPSTREAM_RENAMES:
                new = re.sub(pattern, repl, key, count=1)
                if new != key:
                    key = new
                    break
            renamed[key] = value
        return renamed


def load_backbone(model: MS2MNet, path, strict: bool = True, ema: bool = False,
                  allow_pickle: bool = True) -> LoadReport:
    """Load torchvision's ImageNet ResNet-50 (``resnet50-0676ba61.pth`` / ``-19c8e357.pth``,
    torchvision key names) into every ResNet stream, as upstream's
    ``models.resnet50(pretrained=True)``: the encoder's ``checkpoint_filter_fn`` drops
    ``layer4`` / ``fc`` and averages the stem kernel for a one-channel stream. The suite key
    ``init: {backbone: PATH}`` calls it; the report adds up the streams."""
    total = LoadReport(str(path))
    for name in ("encoder_a", "encoder_b"):
        encoder = getattr(model, name, None)
        if encoder is not None:
            part = load_pretrained(encoder, path, strict=strict, ema=ema,
                                   allow_pickle=allow_pickle)
            total.loaded += [f"{name}.{k}" for k in part.loaded]
            total.missing += [f"{name}.{k}" for k in part.missing]
            total.unexpected += [f"{name}.{k}" for k in part.unexpected]
            total.mismatched += [(f"{name}.{k}", a, b) for k, a, b in part.mismatched]
            total.notes = sorted(set(total.notes + part.notes))
    return total

def _build(size: str, num_classes: int, fusion: Any, modalities, **kwargs) -> MS2MNet:
    return MS2MNet(size, num_classes, fusion=fusion, modalities=modalities, **kwargs)


@register_model(default_fusion="wase+vfe", published=PublishedFigures(
    "MS2MNet", inputs={"rgb": (1, 3, 256, 256), "x": (1, 1, 256, 256)},
    exclude_params=("head.aux_head",),
    reconstructed={"VFE": ("fusion.vfe.",), "ASAF": ("head.fuse",), "DFE": ("dfe.",)},
    source="docs/models.md, 'MS2MNet' (thop on RGB 1×3×256² + DSM 1×1×256²; the paper gives "
           "no values, so only ours are listed)"))
def ms2mnet_base(num_classes: int = 6, fusion: Any = "wase+vfe", modalities=None, **kwargs):
    """The paper's configuration: RGB (3) + DSM (1), 256x256 crops, 6 ISPRS classes."""
    return _build("base", num_classes, fusion, modalities, **kwargs)


@register_model
def ms2mnet_micro(num_classes: int = 6, fusion: Any = "wase+vfe", modalities=None, **kwargs):
    return _build("micro", num_classes, fusion, modalities, **kwargs)


@register_model
def ms2mnet_nano(num_classes: int = 6, fusion: Any = "wase+vfe", modalities=None, **kwargs):
    return _build("nano", num_classes, fusion, modalities, **kwargs)
