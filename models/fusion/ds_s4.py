"""Mamba-Diffusion's DS-S4 block, and the registered fusions ``ds_s4`` and ``dcf+ds_s4``
(WenliangDu/MambaDiffusion ``mmseg/models/backbones/fuse_mamba.py``: ``FusionSS2Dv2`` forward
type "fusev2_v05", ``FusionVSSBlockv2``; docs/models.md, "Mamba-Diffusion"). Built from the
released code's behaviour (not from the paper's figures).

DS-S4 mixer m(P, Q), channels-last, D = ssm_ratio C, with the z gate:
    [xP, zP] = in_proj_a(P)          C -> 2D
    [xQ, - ] = in_proj_b(Q)          C -> 2D, Q's gate half computed and discarded (upstream)
    xP, xQ   = SiLU(dwconv_a xP), SiLU(dwconv_b xQ)
    yP, yQ   = LN_D(S(xP)), LN_D(S(xQ))  one shared 4-direction SS2D core and output norm
    out      = out_proj_a(yP SiLU(zP) + yQ SiLU(zP))        P's gate on both
The block around it is the DCF block's (models/fusion/dcf.py ``PairedBlock``): a mixer per
stream, residual with drop path, per-stream MLP. ``upstream_unused=True`` also builds
``out_proj_b`` (upstream's discarded second output) for parameter and key parity.

``dcf+ds_s4`` (Mamba-Diffusion's configuration) runs the DCF blocks then the DS-S4 blocks at
each stage: depths (2, 2, 2, 2) and (2, 2, 4, 2) for a 4-stage encoder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import kernels
from models.fusion.dcf import DCFMixer, PairedMixerBase, PairedStreamFusion
from models.registry import register_fusion


class DSS4Mixer(PairedMixerBase):
    """Upstream ``FusionSS2Dv2`` "fusev2_v05": ``forward(P, Q) -> P's output``."""

    def __init__(self, d_model: int, **kwargs):
        super().__init__(d_model, z_gate=True, **kwargs)

    def forward(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        h, w = p.shape[1:3]
        xp, zp = self.in_proj_a(p).chunk(2, dim=-1)
        xq = self.in_proj_b(q)[..., :self.d_inner]
        xp = self.conv_act(self.conv2d_a, xp)
        xq = self.conv_act(self.conv2d_b, xq)
        # one scan call for both streams: they share every SSM parameter
        seqs = kernels.cross_scan(torch.cat([xp, xq], dim=0), "cross4")
        y = self.out_norm(self.scan(seqs, seqs, h, w))
        yp, yq = y.chunk(2, dim=0)
        gate = F.silu(zp)
        return self.out_proj_a(yp * gate + yq * gate)


@register_fusion("ds_s4")
class DSS4Fusion(PairedStreamFusion):
    summary = ("Mamba-Diffusion DS-S4: shared SS2D over both streams, gated by the stream's own "
               "z, + MLP, residual into both streams, LN_a + LN_b")
    mixers = {"ds_s4": DSS4Mixer}


@register_fusion("dcf+ds_s4")
class DCFDSS4Fusion(PairedStreamFusion):
    summary = "Mamba-Diffusion's fusion: DCF blocks then DS-S4 blocks at every stage"
    mixers = {"dcf": DCFMixer, "ds_s4": DSS4Mixer}
