"""Mamba-Diffusion (Du et al., IEEE GRSL 2024, doi 10.1109/LGRS.2024.3476269;
WenliangDu/MambaDiffusion; docs/models.md, "Mamba-Diffusion"): optical + SAR land-cover
segmentation.

    streams  two VMamba-v2 encoders (``v2_base`` at the paper size: dims 128..1024, depths
             2,2,15,2, d_state 1, MLP 4, no z gate, patch-embed v2, downsample v3, drop path
             0.6), not pretrained; stream a takes the optical bands, stream b the SAR
    fusion   ``dcf+ds_s4`` inside the encoder (models/fusion/dcf.py, ds_s4.py): at stage i,
             oA, oB = run_stage_i(A), run_stage_i(B); (a, b) = DS-S4^n(DCF^2(oA, oB));
             oA += a, oB += b; the stage feature is LN_a(oA) + LN_b(oB); the streams continue
             from oA, oB (downsampled) -- the fusion feeds back into both encoders
    neck     FPN (-> 256, GN 32, no activation) + multi-stage merging (1/4 resolution)
    head     DDP diffusion head: bit embedding, cosine logSNR, 3 DDIM steps, the time-conditioned
             deformable-attention head (6 layers, 8 heads, FFN 1024) -- models/heads/diffusion.py
    aux      FCNHead on the neck output (256, one conv, dropout 0.1), CE weight 0.4, training only
    loss     diffusion CE (weight 1) + 0.4 aux CE, each averaged over *all* pixels with the
             ignored ones counting zero, as upstream's mmseg ``CrossEntropyLoss``
             (``avg_non_ignore=False``); ``avg_non_ignore=True`` averages over the valid pixels
             instead (a named variant: the loss is then 1 / (1 - ignored fraction) larger)
    infer    DDIM sampling from noise drawn with a fixed seed (``sample_seed``, default 0), so
             evaluation is deterministic; ``sample_seed=None`` draws from the global RNG

Any other registered fusion works too: a fusion without feedback (``add``, ``sigma``, ``wase``,
...) fuses the two encoders' normalised stage outputs (``outnorm{i}``) without feeding back;
``single`` / ``input`` / ``logits`` kinds work as in ``FusionSegmenter`` (late fusion trains
both diffusion heads, each on its own stream, and sums the sampled logits).

The release defines the backbone and the DDP segmentor in code, but its deformable attention is
mmcv's CUDA op and transformer-layer registry (not in the release): that head was written from
the config and the upstream head's behaviour (models/heads/diffusion_attn.py). The fusion blocks
follow the released code's behaviour, with its quirks kept (unused ``out_proj_b`` weights, drop-path
rates read off the backbone's schedule, oA += blocks(oA) doubling the residual).

Sizes (``MAMBA_DIFFUSION_SIZES``): ``base`` is the paper's configuration (default modalities
WHU-OPT-SAR's optical 4 + SAR 1 bands, 7 classes); ``micro`` / ``nano`` are CPU-scale sizes of
ours (VMamba ``v2_micro`` / ``v2_nano`` streams, 1 DCF + 1-2 DS-S4 blocks per stage, a narrow
1-2-layer head), default modalities rgb 3 + x 1.

Measured at base size (tests/models/test_mamba_diffusion.py, built on the meta device):
backbone 410,319,296 parameters = stream a 87,531,328 (4 bands) + stream b 87,529,600 (1 band)
+ DCF 95,383,040 + DS-S4 139,867,648 + 4 x 2 output norms 7,680 (spec: ~410.3M; streams 87.45M
each without their patch embeddings, DCF 95.38M, DS-S4 139.87M). 24,379,392 of them are
upstream's never-used ``out_proj_b`` weights (``upstream_unused=True`` at base, off at CPU
sizes); without them the backbone has 385,939,904. Diffusion head 11,566,671 (neck 3,117,568,
deformable head 7,247,687, label embedding + transform + time MLP 1,201,416); the whole model
421,885,967 at inference (K = 7), + 592,135 for the auxiliary FCN head in training. The paper
publishes no parameter, FLOP or FPS figure.
FLOPs, fvcore MACs at optical 1x4x256^2 + SAR 1x1x256^2 in eval (3 DDIM steps; bench.profiling.flops
``flop_analysis``, scan backend "shape"): "published" convention (scan skipped) 140.04G =
backbone 83.20G (streams 19.77G + 19.75G, fusion 43.68G) + head 56.83G (neck once, then three
denoising passes); "full" (scan counted) 141.65G, backbone 84.82G. The deformable sampling
(``grid_sample``) is not counted by fvcore.
"""
from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F

from models.backbones.vmamba import VMambaEncoder, vmamba_config
from models.encdec import FusionSegmenter
from models.fusion.base import FusionModule
from models.fusion.dcf import PairedStreamFusion
from models.heads.diffusion import DiffusionMaskHead
from models.heads.upernet import FCNHead
from models.losses import cross_entropy
from models.registry import FUSIONS, PublishedFigures, register_model, register_published

#: per size: VMamba config, fusion depths, head settings, aux channels, upstream unused weights
MAMBA_DIFFUSION_SIZES: dict[str, dict[str, Any]] = {
    "base": dict(encoder="v2_base", dcf_depths=(2, 2, 2, 2), ds_s4_depths=(2, 2, 4, 2),
                 head=dict(channels=256, num_groups=32, num_layers=6, num_heads=8,
                           num_points=4, ffn_channels=1024),
                 aux_channels=256, upstream_unused=True, modalities={"rgb": 4, "x": 1}),
    "micro": dict(encoder="v2_micro", dcf_depths=1, ds_s4_depths=(1, 1, 2, 1),
                  head=dict(channels=64, num_groups=8, num_layers=2, num_heads=4,
                            num_points=4, ffn_channels=128),
                  aux_channels=32, upstream_unused=False, modalities={"rgb": 3, "x": 1}),
    "nano": dict(encoder="v2_nano", encoder_overrides=dict(depths=(1, 1, 1, 1)),
                 dcf_depths=1, ds_s4_depths=1,
                 head=dict(channels=32, num_groups=8, num_layers=1, num_heads=4,
                           num_points=4, ffn_channels=64),
                 aux_channels=16, upstream_unused=False, modalities={"rgb": 3, "x": 1}),
}

#: the backbone's figures (``mamba_diffusion_backbone``, registered below): its count is
#: computed from the upstream classes (the paper publishes no parameters, FLOPs or FPS), here
#: with its parts; the mIoU values are the paper's (figs/results.png), of the whole model
PUBLISHED = PublishedFigures(
    "Mamba-Diffusion backbone", inputs={"rgb": (1, 4, 256, 256), "x": (1, 1, 256, 256)},
    params_m=410.3, tol_params=0.01,
    source="docs/models.md, 'Mamba-Diffusion' ([computed] from the upstream classes, counting "
           "upstream's unused fusion projections; no FLOPs published)",
    extra={"params_parts_m": {"stream_a_blocks": 87.45, "stream_b_blocks": 87.45,
                              "dcf": 95.38, "ds_s4": 139.87},
           "miou": {"whu_opt_sar": 59.21, "hunan": 53.06}})

#: the diffusion defaults of the paper's config (``DDP`` segmentor)
DIFFUSION_DEFAULTS = dict(timesteps=3, bit_scale=0.01)


#: upstream (mmseg ``DDP`` + ``Fusion_VSSM``) key patterns -> ours, tried in order
UPSTREAM_KEY_MAP: list[tuple[str, str]] = [
    (r"^backbone\.classifier\.", None),
    (r"^backbone\.patch_embed_A\.", "encoder_a.patch_embed."),
    (r"^backbone\.patch_embed_B\.", "encoder_b.patch_embed."),
    (r"^backbone\.layers_a\.", "encoder_a.layers."),
    (r"^backbone\.layers_b\.", "encoder_b.layers."),
    (r"^backbone\.fuse_layers\.(\d+)\.blocks\.(\d+)\.", "fusion.blocks.{0}.{1}."),
    (r"^backbone\.fuse_layersv2\.(\d+)\.blocks\.(\d+)\.", "fusion.blocks.{0}.{dcf+1}."),
    (r"^backbone\.outnorm_a(\d+)\.", "fusion.outnorm_a.{0}."),
    (r"^backbone\.outnorm_b(\d+)\.", "fusion.outnorm_b.{0}."),
    (r"^neck\.0\.", "head.neck.fpn."),
    (r"^neck\.1\.", "head.neck.merge."),
    (r"^embedding_table\.", "head.embedding_table."),
    (r"^transform\.conv\.", "head.transform."),
    (r"^time_mlp\.", "head.time_mlp."),
    (r"^decode_head\.conv_seg\.", "head.decode_head.conv_seg."),
    (r"^decode_head\.encoder\.layers\.(\d+)\.attentions\.0\.",
     "head.decode_head.layers.{0}.attn."),
    (r"^decode_head\.encoder\.layers\.(\d+)\.norms\.0\.", "head.decode_head.layers.{0}.norm1."),
    (r"^decode_head\.encoder\.layers\.(\d+)\.norms\.1\.", "head.decode_head.layers.{0}.norm2."),
    (r"^decode_head\.encoder\.layers\.(\d+)\.ffns\.0\.layers\.0\.0\.",
     "head.decode_head.layers.{0}.ffn.0."),
    (r"^decode_head\.encoder\.layers\.(\d+)\.ffns\.0\.layers\.1\.",
     "head.decode_head.layers.{0}.ffn.3."),
    (r"^decode_head\.encoder\.layers\.(\d+)\.time_mlp\.", "head.decode_head.layers.{0}.time_mlp."),
    (r"^auxiliary_head\.", "aux_head."),
]


#: Mamba-Diffusion trains from scratch (its backbone checkpoint path is commented out), so
#: ``init: {backbone:}`` is refused for it; ``init: {checkpoint:}`` still works.
FROM_SCRATCH = ("Mamba-Diffusion's config trains both VMamba-v2 streams from scratch (its "
                "checkpoint path is commented out)")


def upstream_to_ours(key: str, dcf_depths: list[int]) -> str | None:
    """One upstream key -> ours (None: dropped); unknown keys are returned unchanged."""
    for pattern, target in UPSTREAM_KEY_MAP:
        match = re.match(pattern, key)
        if not match:
            continue
        if target is None:
            return None
        groups = match.groups()
        if "{dcf+1}" in target:
            target = target.replace("{dcf+1}", str(dcf_depths[int(groups[0])] + int(groups[1])))
        return target.format(*groups) + key[match.end():]
    return key


class MambaDiffusion(FusionSegmenter):
    def __init__(self, size: str, num_classes: int = 7, fusion: Any = "dcf+ds_s4",
                 modalities: dict[str, int] | None = None, aux_weight: float = 0.4,
                 sample_seed: int | None = 0, timesteps: int = 3, bit_scale: float = 0.01,
                 drop_path_rate: float | None = None, upstream_unused: bool | None = None,
                 shared_encoder: bool = False, fusion_kwargs: dict | None = None,
                 ignore_index: int = 255, avg_non_ignore: bool = False):
        if size not in MAMBA_DIFFUSION_SIZES:
            raise ValueError(f"unknown Mamba-Diffusion size {size!r}; known: "
                             f"{', '.join(MAMBA_DIFFUSION_SIZES)}")
        spec = MAMBA_DIFFUSION_SIZES[size]
        cfg = vmamba_config(spec["encoder"], **spec.get("encoder_overrides", {}))
        if drop_path_rate is not None:
            cfg = vmamba_config(cfg, drop_path_rate=drop_path_rate)
        modalities = modalities or dict(spec["modalities"])
        if isinstance(fusion, str):
            fusion = self._make_fusion(fusion, cfg, spec, upstream_unused, fusion_kwargs)
        self.feeds_back = bool(fusion.feeds_back) and fusion.kind == "stage"
        head_kwargs = dict(spec["head"], timesteps=timesteps, bit_scale=bit_scale,
                           ignore_index=ignore_index, seed=sample_seed,
                           avg_non_ignore=avg_non_ignore)
        super().__init__(
            lambda in_chans: VMambaEncoder(in_chans, cfg, out_norms=not self.feeds_back),
            lambda in_channels: DiffusionMaskHead(in_channels, num_classes, **head_kwargs),
            fusion, num_classes, modalities=modalities, shared_encoder=shared_encoder,
            ignore_index=ignore_index,
        )
        self.size = size
        self.aux_weight = aux_weight
        self.avg_non_ignore = avg_non_ignore
        width = spec["head"]["channels"]
        self.aux_head = (FCNHead([width], num_classes, in_index=0, channels=spec["aux_channels"],
                                 num_convs=1, dropout=0.1) if aux_weight > 0 else None)

    @staticmethod
    def _make_fusion(name: str, cfg, spec: dict, upstream_unused: bool | None,
                     fusion_kwargs: dict | None) -> FusionModule:
        cls = FUSIONS.get(name)
        kwargs = {}
        if issubclass(cls, PairedStreamFusion):
            # the paper's settings: its block depths, the backbone's drop-path schedule
            kwargs = dict(dcf_depths=spec["dcf_depths"], ds_s4_depths=spec["ds_s4_depths"],
                          d_state=cfg.d_state, ssm_ratio=cfg.ssm_ratio, mlp_ratio=cfg.mlp_ratio,
                          drop_path_rate=cfg.drop_path_rate, schedule_len=sum(cfg.depths),
                          upstream_unused=(spec["upstream_unused"] if upstream_unused is None
                                           else upstream_unused))
        kwargs.update(fusion_kwargs or {})
        return cls(list(cfg.dims), **kwargs)

    # ------------------------------------------------------------------ encoding
    def extract(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        if not self.feeds_back:
            return super().extract(inputs)
        enc_a = self.encoder_a
        enc_b = self.encoder_a if self.shared_encoder else self.encoder_b
        x_b = inputs[self.key_b]
        if self.shared_encoder:
            x_b = x_b.expand(-1, self.in_chans, -1, -1) if x_b.shape[1] == 1 else x_b
        a, b = enc_a.embed(inputs[self.key_a]), enc_b.embed(x_b)
        features = []
        for i in range(enc_a.num_stages):
            a, b = self.fusion.interact(i, enc_a.run_stage(i, a), enc_b.run_stage(i, b))
            features.append(self.fusion.merge(i, a, b))
            a, b = enc_a.downsample(i, a), enc_b.downsample(i, b)
        return features

    # ------------------------------------------------------------------ training
    def _aux_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = F.interpolate(self.aux_head([x]), size=target.shape[-2:], mode="bilinear",
                               align_corners=False)
        return cross_entropy(logits, target, ignore_index=self.ignore_index,
                             avg_non_ignore=self.avg_non_ignore)

    def forward_train(self, inputs: dict[str, torch.Tensor], target: torch.Tensor,
                      state: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
        if self.fusion.kind == "logits":
            x = self.head.neck(self.encoder_a(inputs[self.key_a]))
            x_b = self.head_b.neck(self._encode_b(inputs[self.key_b]))
            loss_decode = (self.head.loss(x, target)["loss_decode"]
                           + self.head_b.loss(x_b, target)["loss_decode"])
        else:
            x = self.head.neck(self.extract(inputs))
            loss_decode = self.head.loss(x, target)["loss_decode"]
        out = {"loss": loss_decode, "loss_decode": loss_decode}
        if self.aux_head is not None:
            out["loss_aux"] = self._aux_loss(x, target)
            out["loss"] = loss_decode + self.aux_weight * out["loss_aux"]
        return out

    # ------------------------------------------------------------------ upstream checkpoints
    def checkpoint_filter_fn(self, state_dict: dict[str, torch.Tensor], model=None):
        """Rename an upstream ``DDP`` checkpoint's keys to ours (see ``UPSTREAM_KEY_MAP``).

        The fusion layers' block indices are shifted: upstream ``fuse_layersv2.{i}.blocks.{j}``
        is our ``fusion.blocks.{i}.{n_dcf_i + j}``. The unused classifier is dropped, and so
        are ``out_proj_b`` weights when the model was built without them. The deformable head's
        keys follow mmcv's layer naming (``attentions.0``, ``norms.{0,1}``, ``ffns.0.layers``)."""
        dcf_depths = getattr(self.fusion, "depths", {}).get("dcf", [0] * 4)
        own = self.state_dict()
        renamed = {}
        for key, value in state_dict.items():
            new = upstream_to_ours(key, dcf_depths)
            if new is None or (new not in own and ".out_proj_b." in new):
                continue
            renamed[new] = value
        return renamed

    # ------------------------------------------------------------------ parameter report
    def backbone_parameters(self) -> int:
        """Parameters of upstream's ``Fusion_VSSM``: both streams and, for feedback fusions,
        the fusion blocks with the output norms (upstream's 410.3M at base size, docs/models.md)."""
        modules = [self.encoder_a] + ([self.encoder_b] if hasattr(self, "encoder_b") else [])
        if self.feeds_back:
            modules.append(self.fusion)
        return sum(p.numel() for m in modules for p in m.parameters())


class MambaDiffusionBackbone(torch.nn.Module):
    """Upstream ``Fusion_VSSM`` as a module of its own (both streams and the fusion, no neck or
    head): ``forward(inputs) -> [stage features]``, for the zoo report's published-vs-measured
    row (upstream's 410.3M, docs/models.md, is the backbone's count)."""

    def __init__(self, model: MambaDiffusion):
        super().__init__()
        self.encoder_a = model.encoder_a
        if hasattr(model, "encoder_b"):
            self.encoder_b = model.encoder_b
        self.fusion = model.fusion
        self.modalities = model.modalities
        self.__dict__["_model"] = model          # not a submodule: the head is not counted

    def forward(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return self._model.extract(inputs)


@register_published(PUBLISHED)
def mamba_diffusion_backbone(size: str = "base", **kwargs) -> MambaDiffusionBackbone:
    """The backbone of ``mamba_diffusion_<size>`` (same arguments)."""
    return MambaDiffusionBackbone(MambaDiffusion(size, **kwargs))


def _build(size: str, **kwargs) -> MambaDiffusion:
    return MambaDiffusion(size, **kwargs)


@register_model(default_fusion="dcf+ds_s4")
def mamba_diffusion_base(num_classes: int = 7, fusion: Any = "dcf+ds_s4", **kwargs):
    """The paper's configuration (WHU-OPT-SAR: optical 4 + SAR 1 bands, 7 classes)."""
    return _build("base", num_classes=num_classes, fusion=fusion, **kwargs)


@register_model(default_fusion="dcf+ds_s4")
def mamba_diffusion_micro(num_classes: int = 7, fusion: Any = "dcf+ds_s4", **kwargs):
    return _build("micro", num_classes=num_classes, fusion=fusion, **kwargs)


@register_model(default_fusion="dcf+ds_s4")
def mamba_diffusion_nano(num_classes: int = 7, fusion: Any = "dcf+ds_s4", **kwargs):
    return _build("nano", num_classes=num_classes, fusion=fusion, **kwargs)
