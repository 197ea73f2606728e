"""ReMamber (ECCV 2024, arXiv 2403.17839; yyh-rain-song/ReMamber): referring segmentation with a
VMamba-v2 encoder whose every stage ends in ImageTextCorr + two Mamba Twister blocks
(docs/models.md, "ReMamber").

    text      ``models.text_encoder``: a word transformer trained from scratch by default (at
              ``base`` CLIP ViT-L/14's text-tower shape, 123.06M parameters, random init), or any
              local Hugging Face model (``text_encoder: {hf_path: /path/to/clip}``); ReMamber
              trains HF CLIP ViT-L/14's text model (768-d, 20 tokens)
    encoder   VMamba-v2 (models/backbones/vmamba.py, ``v2_base`` at base size: dims 128..1024,
              depths 2,2,15,2, d_state 1, MLP 4, drop path 0.1), no per-stage output norms
              (upstream's classification VSSM has none)
    fusion    per stage, after the VSS blocks: ``fusion(i, F, text)`` (default ``twister``,
              models/fusion/twister.py); the fused map is the stage output *and* the input of
              the next downsampling, as upstream
    head      ``conv`` (default, upstream ``ReMamber_Conv``) or ``mamba``
              (models/heads/remamber_heads.py; its global text vector is the first token's
              feature, as upstream; ``head_kwargs: {text_vector: pooled}`` is our variant);
              logits (B, 1, H, W) resized to the input with bilinear
              align_corners=True, as upstream's segmenter; evaluation resizes them
              to the label's size with nearest, as upstream's test loop (the refcoco
              datasets' protocol, ``resize_back: nearest`` in bench/evaluation/protocols.py)
    loss      Dice(sigmoid) + BCE (upstream ``dice_loss`` + ``sigmoid_focal_loss(alpha=-1,
              gamma=0)``), each a mean; pixels labelled ``ignore_index`` take no part

Sizes: ``base`` is the paper's; ``micro`` and ``nano`` are CPU-scale sizes of ours
(``REMAMBER_SIZES``): ``v2_micro`` / ``v2_nano`` encoders, a small word transformer, Twister
hidden 64 / 32 with a channel-scan resolution of 8 / 4, conv-head width 64 / 32.

Parameters at base size (tests/models/test_remamber.py checks each part against formulas of the
upstream layers; ReMamber publishes no total, see ``PUBLISHED``):
    text encoder (CLIP-L text shape)    123,060,480   (HF CLIPTextModel ViT-L/14: 123.06M)
    VMamba-v2-B encoder                  87,530,752   (+ its classifier 1,027,048 = 88.56M;
                                                       published 89M: -0.5%)
    ImageTextCorr + Twister, 4 stages    34,502,400
    conv head                             9,484,545   (Mamba head: 36,458,305)
    total                               254,578,177   (Mamba head: 281,551,937)
FLOPs at 480 x 480, batch 1, 20 tokens, conv head (fvcore MACs, bench.profiling.flops.count_flops;
not published): 285.12G "published" convention (scan skipped), 286.94G "full" = text 1.71 + encoder
70.52 + fusion 29.22 + head 185.49 (the head's full-resolution 3x3 convolutions dominate).
"""
from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F

from models.backbones.vmamba import VMambaEncoder
from models.base import SegModel
from models.heads.remamber_heads import ReMamberConvHead, ReMamberMambaHead
from models.pretrained import LoadReport, match_state, read_state_dict
from models.registry import FUSIONS, PublishedFigures, create_fusion, register_model
from models.text_encoder import build_text_encoder

#: per size: encoder config, drop path, default text encoder, Twister settings
REMAMBER_SIZES = {
    "base": dict(encoder="v2_base", drop_path_rate=0.1, text="clip_l",
                 twister=dict(hidden_dim=512, channel_res=16), head_hidden=None),  # 4 C = 512
    "micro": dict(encoder="v2_micro", drop_path_rate=0.0, text="micro",
                  twister=dict(hidden_dim=64, channel_res=8), head_hidden=64),
    "nano": dict(encoder="v2_nano", drop_path_rate=0.0, text="nano",
                 twister=dict(hidden_dim=32, channel_res=4), head_hidden=32),
}

#: the paper's figures, registered with ``remamber_base``. ReMamber publishes no parameters,
#: FLOPs or FPS (so it is no row of the model-zoo report); the parts' reference counts are
#: VMamba-v2-B's release (89M with its classifier) and HF CLIP ViT-L/14's text model
#: (123.06M). oIoU from the MaskRIS / SaFiRe tables [3rd]; ablation mIoU from paper notes [3rd].
PUBLISHED = PublishedFigures(
    "ReMamber", source="ReMamber ECCV 2024 (arXiv 2403.17839)",
    extra={
        "params_parts_m": {"vmamba_v2_base_with_classifier": 89.0, "clip_l_text": 123.06},
        "oIoU": {"refcoco": {"val": 74.54, "testA": 76.74, "testB": 70.89},
                 "refcoco+": {"val": 65.00, "testA": 70.78, "testB": 57.53},
                 "refcocog": {"val": 63.90, "test": 64.00}},
        "ablation_val_mIoU": {  # RefCOCO / RefCOCO+ / G-Ref
            "twister": (71.6, 61.6, 61.1), "norm_adaptation": (70.2, 60.3, 59.3),
            "in_context": (69.1, 58.4, 54.8), "attention": (65.3, 54.0, 50.5)},
        "scan_order_refcoco_val_mIoU": {"channel->spatial": 71.6, "parallel": 71.0,
                                        "spatial": 70.0, "channel": 62.3},
    })


def referring_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255,
                   dice_weight: float = 1.0, bce_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """ReMamber's loss on logits (B, 1, H, W) and a {0, 1} mask (B, H, W): per-sample soft Dice
    1 - (2 sum(p t) + 1) / (sum p + sum t + 1) averaged over the batch, plus BCE with logits
    averaged over the pixels (= upstream's focal loss with alpha -1, gamma 0)."""
    logits = logits[:, 0]
    valid = (target != ignore_index).to(logits.dtype)
    truth = (target == 1).to(logits.dtype)
    probs = logits.sigmoid() * valid
    numerator = 2 * (probs * truth).flatten(1).sum(1)
    denominator = probs.flatten(1).sum(1) + truth.flatten(1).sum(1)
    dice = (1 - (numerator + 1) / (denominator + 1)).mean()
    bce_map = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
    bce = (bce_map * valid).sum() / valid.sum().clamp(min=1)
    return {"loss": dice_weight * dice + bce_weight * bce, "loss_dice": dice, "loss_bce": bce}


def _text_fusions() -> list[str]:
    """The registered fusions that pair an image with text (what a ReMamber cell may use)."""
    return [n for n in FUSIONS.names() if FUSIONS.get(n).pairs_with == "text"]


class ReMamber(SegModel):
    """ReMamber (module docstring). ``forward({"rgb": (B, 3, H, W), "text": (B, T)})`` ->
    logits (B, 1, H, W)."""

    modalities = ("rgb", "text")

    def __init__(self, size: str, num_classes: int = 1, fusion: str | None = "twister",
                 modalities: dict[str, int] | None = None, head: str = "conv",
                 text_encoder: dict | str | None = None, fusion_kwargs: dict | None = None,
                 head_kwargs: dict | None = None, encoder_kwargs: dict | None = None,
                 ignore_index: int = 255, dice_weight: float = 1.0, bce_weight: float = 1.0):
        super().__init__()
        if size not in REMAMBER_SIZES:
            raise ValueError(f"unknown ReMamber size {size!r} (known: {', '.join(REMAMBER_SIZES)})")
        modalities = dict(modalities or {"rgb": 3, "text": 20})
        if "text" not in modalities:
            raise ValueError(f"ReMamber is a referring model: its dataset must give 'text' token "
                             f"ids (refcoco, synref), got modalities {list(modalities)}")
        if num_classes != 1:
            raise ValueError(f"ReMamber predicts one mask logit; num_classes must be 1, got "
                             f"{num_classes}")
        cfg = REMAMBER_SIZES[size]
        self.size = size
        self.num_classes = 1
        self.ignore_index = ignore_index
        self.dice_weight, self.bce_weight = dice_weight, bce_weight
        image_key = next(k for k in modalities if k != "text")
        self.modalities = (image_key, "text")
        num_tokens = int(modalities["text"])

        self.text_encoder = build_text_encoder(text_encoder, default=cfg["text"])
        text_dim = self.text_encoder.out_dim
        self.encoder = VMambaEncoder(modalities[image_key], config=cfg["encoder"],
                                     drop_path_rate=cfg["drop_path_rate"], out_norms=False,
                                     **(encoder_kwargs or {}))
        channels = list(self.encoder.out_channels)
        fusion = fusion or "twister"
        if isinstance(fusion, str):
            if FUSIONS.get(fusion).pairs_with != "text":
                raise ValueError(f"ReMamber fuses the image with text; fusion {fusion!r} pairs "
                                 f"two images (use one with pairs_with 'text': "
                                 f"{', '.join(_text_fusions())})")
            settings = dict(cfg["twister"], text_dim=text_dim, num_tokens=num_tokens)
            settings.update(fusion_kwargs or {})
            fusion = create_fusion(fusion, channels, **settings)
        self.fusion = fusion
        if head == "conv":
            settings = dict(hidden=cfg["head_hidden"])
            settings.update(head_kwargs or {})
            self.head = ReMamberConvHead(channels, 1, **settings)
        elif head == "mamba":
            settings = dict(text_dim=text_dim, num_tokens=num_tokens,
                            hidden_dim=cfg["twister"]["hidden_dim"])
            settings.update(head_kwargs or {})
            self.head = ReMamberMambaHead(channels, 1, **settings)
        else:
            raise ValueError(f"ReMamber head must be 'conv' or 'mamba', got {head!r}")
        self.head_kind = head

    def extract(self, inputs: dict[str, torch.Tensor]):
        """(stage features [F1..F4] channels-first, text features)."""
        text = self.text_encoder(inputs["text"])
        x = self.encoder.embed(inputs[self.modalities[0]])
        features = []
        for i in range(self.encoder.num_stages):
            x = self.encoder.run_stage(i, x)
            fused = self.fusion(i, x.permute(0, 3, 1, 2), text)
            features.append(fused)
            x = self.encoder.downsample(i, fused.permute(0, 2, 3, 1))
        return features, text

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        image = inputs[self.modalities[0]]
        features, text = self.extract(inputs)
        logits = self.head(features, text)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=True)

    def forward_train(self, inputs: dict[str, torch.Tensor], target: torch.Tensor,
                      state: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
        logits = self(inputs)
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                                   align_corners=True)
        return referring_loss(logits, target, self.ignore_index, self.dice_weight,
                              self.bce_weight)

    # ---------------------------------------------------------------- upstream checkpoints
    #: upstream (``model.state_dict()`` of ReMamber_Conv / ReMamber_Mamba) -> ours
    UPSTREAM_RENAMES = (
        (r"^backbone\.text_guidencee\.(\d+)\.", r"fusion.global_text.\1."),
        (r"^backbone\.local_text_fusion\.(\d+)\.unsqueeze\.", r"fusion.local_text.\1.cost_conv."),
        (r"^backbone\.local_text_fusion\.(\d+)\.", r"fusion.local_text.\1."),
        (r"^backbone\.multimodal_blocks\.(\d+)\.blocks\.(\d+)\.ln_1\.",
         r"fusion.blocks.\1.\2.norm."),
        (r"^backbone\.multimodal_blocks\.(\d+)\.blocks\.(\d+)\.self_attention\.ss2d\.",
         r"fusion.blocks.\1.\2.spatial."),
        (r"^backbone\.multimodal_blocks\.(\d+)\.blocks\.(\d+)\.self_attention\.ss1d\.",
         r"fusion.blocks.\1.\2.channel_scan.ss1d."),
        (r"^backbone\.", "encoder."),
        (r"^decoder\.text_guidencee\.", "head.global_text."),
        (r"^decoder\.local_text_fusion\.(\d+)\.unsqueeze\.", r"head.local_text.\1.cost_conv."),
        (r"^decoder\.local_text_fusion\.", "head.local_text."),
        (r"^decoder\.multimodal_blocks\.(\d+)\.blocks\.(\d+)\.ln_1\.", r"head.blocks.\1.\2.norm."),
        (r"^decoder\.multimodal_blocks\.(\d+)\.blocks\.(\d+)\.self_attention\.",
         r"head.blocks.\1.\2.op."),
        (r"^decoder\.multimodal_blocks\.(\d+)\.downsample\.", r"head.upsample.\1."),
        (r"^decoder\.hire_fusion\.", "head.fuse."),
        (r"^decoder\.", "head."),
        (r"^text_encoder\.", "text_encoder.model."),
    )

    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor], model=None):
        """Rename an upstream ReMamber checkpoint's keys to ours (upstream's Linear2d keeps
        nn.Linear's (out, in) weights, so shapes carry over), or a VMamba classification
        checkpoint's onto the encoder. The text encoder keys map only onto an HF text encoder
        (``hf_path``). Key names were read from upstream's code, not from a released file."""
        if not any(k.startswith(("backbone.", "decoder.")) for k in state_dict):
            # a VMamba classification checkpoint (upstream starts from vssm_base_0229): the
            # encoder only, its classifier dropped (ReMamber sets ``classifier = None``)
            return {f"encoder.{k}": v for k, v in state_dict.items()
                    if not k.startswith("classifier.")}
        renamed = {}
        for key, value in state_dict.items():
            for pattern, repl in self.UPSTREAM_RENAMES:
                new = re.sub(pattern, repl, key)
                if new != key:
                    key = new
                    break
            renamed[key] = value
        return renamed


def load_backbone(model: ReMamber, path, strict: bool = True, ema: bool = False,
                  allow_pickle: bool = True) -> LoadReport:
    """Load a VMamba-v2 ImageNet checkpoint (upstream starts from
    ``vssm_base_0229_ckpt_epoch_237.pth``) into the image encoder; its ``classifier.*`` keys
    are not used (ReMamber sets ``classifier = None``). With ``strict``, raise if any encoder
    key is missing or mismatched. The suite key ``init: {backbone: PATH}`` calls it."""
    notes: list[str] = []
    state = read_state_dict(path, ema=ema, allow_pickle=allow_pickle, notes=notes)
    report = LoadReport(str(path), notes=notes)
    own = model.encoder.state_dict()
    usable = match_state(own, {k: v for k, v in state.items()
                               if not k.startswith("classifier.")}, report)
    report.missing = [k for k in own if k not in state]
    if strict and not report.ok:
        raise ValueError("VMamba checkpoint does not match ReMamber's encoder:\n"
                         + report.summary())
    model.encoder.load_state_dict(usable, strict=False)
    return report

def _create_remamber(size: str, num_classes: int = 1, fusion: Any = "twister",
                     modalities=None, **kwargs) -> ReMamber:
    return ReMamber(size, num_classes=num_classes, fusion=fusion, modalities=modalities,
                    **kwargs)


@register_model(default_fusion="twister", task="text", published=PUBLISHED)
def remamber_base(num_classes: int = 1, fusion: Any = "twister", modalities=None, **kwargs):
    """The paper's configuration (VMamba-v2-B, CLIP-L-shaped text, Twister hidden 512)."""
    return _create_remamber("base", num_classes, fusion, modalities, **kwargs)


@register_model(default_fusion="twister", task="text")
def remamber_micro(num_classes: int = 1, fusion: Any = "twister", modalities=None, **kwargs):
    return _create_remamber("micro", num_classes, fusion, modalities, **kwargs)


@register_model(default_fusion="twister", task="text")
def remamber_nano(num_classes: int = 1, fusion: Any = "twister", modalities=None, **kwargs):
    return _create_remamber("nano", num_classes, fusion, modalities, **kwargs)


__all__ = ["ReMamber", "REMAMBER_SIZES", "PUBLISHED", "referring_loss"]
