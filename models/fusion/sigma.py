"""Sigma's fusion modules (zifuwan/Sigma ``models/encoders/vmamba.py``; docs/models.md, "Sigma"):
CroMB (cross Mamba: each modality's scan read out with the other's C) and ConMB (concat Mamba: one
scan over the concatenated sequence [rgb ; x] both ways, cross SE gates), per encoder stage.

Registered fusions (all kind "stage", any channel counts, so every FusionSegmenter can use them,
the CNN encoder of dualcnn included):

    sigma   F_i = CroMB then ConMB (Sigma's fusion, ``cma and cam`` upstream)
    cromb   F_i = rgb' + x' with (rgb', x') = CroMB(rgb, x)
    conmb   F_i = ConMB(rgb, x) on the raw features (upstream's ``cam and not cma`` ablation)

CroMB on stage features (B, H, W, C), D = ssm_ratio*C, N = d_state (4), R = ceil(C/16):
    u_m = SiLU(dwconv3x3(in_proj_m(x_m)))      in_proj (rgb) / in_proj_modalx (x), one shared
                                               conv for both modalities; raster order (K = 1)
    [dt_m | B_m | C_m] = x_proj_m(u_m);  dt_m = dt_proj_m.weight @ dt_m (its bias -> delta_bias)
    y_rgb = S(u_rgb; dt_rgb, A_1, B_rgb, C_x),   y_x = S(u_x; dt_x, A_2, B_x, C_rgb)
    out_m = x_m + out_proj_m(LN_m(y_m))        no pre-norm, no z gate
  Both scans run as one ``selective_scan`` call with two groups of B / C rows (same numbers as
  upstream's two calls).

ConMB:
    u_m = SiLU(dwconv_m(in_proj_m(x_m)))       separate projections and convs
    sequence [u_rgb ; u_x] of length 2HW, scanned forward and reversed (``bidir``, K = 2, own
    parameters each), y = y_f + flip(y_r), split into y_rgb, y_x, LayerNorm each
    gates g_m = sigmoid(Linear(SiLU(Linear(GAP(in_proj_m(x_m))))))  (D -> D/16 -> D, no bias),
    from the projections *before* the conv; y_rgb *= g_x, y_x *= g_rgb
    out = x_rgb + x_x + out_proj([y_rgb, y_x])          Linear(2D -> C)

Parameter names are upstream's (``cross_mamba.{i}.op.{in_proj, in_proj_modalx, conv2d,
out_proj_rgb, out_proj_e, CMA_ssm.{x_proj_1, dt_proj_1, A_log_1, D_1, out_norm_1, ...}}``,
``channel_attn_mamba.{i}.op.{..., fc1, fc2}``). Initialisation as upstream: PyTorch defaults for
Linear / Conv (Sigma never re-initialises its fusion blocks), SSM parameters as ss2d.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from models.backbones.ss2d import (
    add_directional_ssm_params,
    directional_ssm,
    init_A_log,
    init_dt_bias,
    resolve_dt_rank,
)
from models.fusion.base import FusionModule
from models.layers import DropPath
from models.registry import register_fusion


def _dt_proj(rank: int, d_inner: int, dt_scale: float = 1.0) -> nn.Linear:
    """Upstream's ``dt_init``: weight ~ U(+-rank^-0.5 * dt_scale), bias = softplus^-1(dt)."""
    proj = nn.Linear(rank, d_inner, bias=True)
    std = rank ** -0.5 * dt_scale
    with torch.no_grad():
        proj.weight.uniform_(-std, std)
        proj.bias.copy_(init_dt_bias(d_inner, 1)[0])
    return proj


class CrossSSM(nn.Module):
    """Upstream ``Cross_Mamba_Attention_SSM``: two selective scans with C swapped."""

    def __init__(self, d_model: int, d_state: int = 4, ssm_ratio: float = 2.0,
                 dt_rank: int | str = "auto"):
        super().__init__()
        self.d_inner = d_inner = int(ssm_ratio * d_model)
        self.d_state = d_state
        self.dt_rank = rank = resolve_dt_rank(dt_rank, d_model)
        self.x_proj_1 = nn.Linear(d_inner, rank + 2 * d_state, bias=False)
        self.x_proj_2 = nn.Linear(d_inner, rank + 2 * d_state, bias=False)
        self.dt_proj_1 = _dt_proj(rank, d_inner)
        self.dt_proj_2 = _dt_proj(rank, d_inner)
        self.A_log_1 = nn.Parameter(init_A_log(d_state, d_inner))
        self.A_log_2 = nn.Parameter(init_A_log(d_state, d_inner))
        self.D_1 = nn.Parameter(torch.ones(d_inner))
        self.D_2 = nn.Parameter(torch.ones(d_inner))
        for p in (self.A_log_1, self.A_log_2, self.D_1, self.D_2):
            p._no_weight_decay = True
        self.out_norm_1 = nn.LayerNorm(d_inner)
        self.out_norm_2 = nn.LayerNorm(d_inner)

    def forward(self, u_rgb: torch.Tensor, u_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) each -> (B, L, D) each."""
        b, length, d = u_rgb.shape
        split = [self.dt_rank, self.d_state, self.d_state]
        dt_r, B_r, C_r = torch.split(self.x_proj_1(u_rgb), split, dim=-1)
        dt_x, B_x, C_x = torch.split(self.x_proj_2(u_x), split, dim=-1)
        dt = torch.cat([F.linear(dt_r, self.dt_proj_1.weight),
                        F.linear(dt_x, self.dt_proj_2.weight)], dim=-1)      # (B, L, 2D)
        u = torch.cat([u_rgb, u_x], dim=-1)
        # group 0 (rgb channels) reads out with the x stream's C and vice versa
        Bs = torch.stack([B_r, B_x], dim=1).transpose(-1, -2)                  # (B, 2, N, L)
        Cs = torch.stack([C_x, C_r], dim=1).transpose(-1, -2)
        A = -torch.exp(torch.cat([self.A_log_1, self.A_log_2]).float())
        y = kernels.selective_scan(
            u.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous(), A,
            Bs.contiguous(), Cs.contiguous(), torch.cat([self.D_1, self.D_2]).float(),
            delta_bias=torch.cat([self.dt_proj_1.bias, self.dt_proj_2.bias]).float(),
            delta_softplus=True,
        ).transpose(1, 2)                                                      # (B, L, 2D)
        y_rgb, y_x = y.split(d, dim=-1)
        return self.out_norm_1(y_rgb), self.out_norm_2(y_x)


class CroMBMixer(nn.Module):
    """Upstream ``CrossMambaFusion_SS2D_SSM`` (the ``op`` of a CroMB block)."""

    def __init__(self, d_model: int, d_state: int = 4, ssm_ratio: float = 2.0,
                 dt_rank: int | str = "auto", d_conv: int = 3, conv_bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        d_inner = int(ssm_ratio * d_model)
        self.in_proj = nn.Linear(d_model, d_inner, bias=False)
        self.in_proj_modalx = nn.Linear(d_model, d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2,
                                groups=d_inner, bias=conv_bias)
        self.out_proj_rgb = nn.Linear(d_inner, d_model, bias=False)
        self.out_proj_e = nn.Linear(d_inner, d_model, bias=False)
        self.dropout_rgb = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dropout_e = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.CMA_ssm = CrossSSM(d_model, d_state, ssm_ratio, dt_rank)

    def _conv_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, D) -> SiLU(dwconv) as raster-order tokens (B, L, D) (the K = 1 scan)."""
        u = F.silu(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))
        return kernels.cross_scan(u, "unidir")[:, 0].transpose(1, 2)

    def forward(self, x_rgb: torch.Tensor, x_e: torch.Tensor):
        b, h, w, _ = x_rgb.shape
        y_rgb, y_e = self.CMA_ssm(self._conv_tokens(self.in_proj(x_rgb)),
                                  self._conv_tokens(self.in_proj_modalx(x_e)))
        return (self.dropout_rgb(self.out_proj_rgb(y_rgb.reshape(b, h, w, -1))),
                self.dropout_e(self.out_proj_e(y_e.reshape(b, h, w, -1))))


class CroMB(nn.Module):
    """CroMB block: ``x_m + DropPath(op(x_rgb, x_e)_m)``, channels-last."""

    def __init__(self, dim: int, d_state: int = 4, ssm_ratio: float = 2.0,
                 drop_path: float = 0.0, **kwargs):
        super().__init__()
        self.op = CroMBMixer(dim, d_state=d_state, ssm_ratio=ssm_ratio, **kwargs)
        self.drop_path1 = DropPath(drop_path)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x_rgb: torch.Tensor, x_e: torch.Tensor):
        c_rgb, c_e = self.op(x_rgb, x_e)
        return x_rgb + self.drop_path1(c_rgb), x_e + self.drop_path2(c_e)


def _se_gate(d_inner: int) -> nn.Sequential:
    hidden = max(1, d_inner // 16)
    return nn.Sequential(nn.Linear(d_inner, hidden, bias=False), nn.SiLU(),
                         nn.Linear(hidden, d_inner, bias=False), nn.Sigmoid())


class ConMBMixer(nn.Module):
    """Upstream ``ConMB_SS2D`` (the ``op`` of a ConMB block)."""

    def __init__(self, d_model: int, d_state: int = 4, ssm_ratio: float = 2.0,
                 dt_rank: int | str = "auto", d_conv: int = 3, conv_bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.d_inner = d_inner = int(ssm_ratio * d_model)
        self.d_state = d_state
        self.dt_rank = rank = resolve_dt_rank(dt_rank, d_model)
        k = 2
        self.in_proj = nn.Linear(d_model, d_inner, bias=False)
        self.in_proj_modalx = nn.Linear(d_model, d_inner, bias=False)
        conv = dict(kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias)
        self.conv2d = nn.Conv2d(d_inner, d_inner, **conv)
        self.conv2d_modalx = nn.Conv2d(d_inner, d_inner, **conv)
        add_directional_ssm_params(self, k, d_inner, d_state, rank)
        self.out_norm1 = nn.LayerNorm(d_inner)
        self.out_norm2 = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(2 * d_inner, d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = _se_gate(d_inner)
        self.fc2 = _se_gate(d_inner)

    def scan_concat(self, u_rgb: torch.Tensor, u_x: torch.Tensor):
        """(B, D, H, W) each -> (B, H, W, D) each: the bidirectional scan over [rgb ; x]."""
        b, d, h, w = u_rgb.shape
        length = 2 * h * w
        # stacking along H makes the row-major sequence [rgb tokens ; x tokens]
        xs = kernels.cross_scan(torch.cat([u_rgb, u_x], dim=2), "bidir")        # (B, 2, D, 2L)
        y = directional_ssm(self, xs)
        y = kernels.cross_merge(y.view(b, 2, d, length), 2 * h, w, "bidir")     # (B, D, 2L)
        y_rgb, y_x = y.transpose(1, 2).split(h * w, dim=1)
        return (self.out_norm1(y_rgb.reshape(b, h, w, d)),
                self.out_norm2(y_x.reshape(b, h, w, d)))

    def forward(self, x_rgb: torch.Tensor, x_e: torch.Tensor) -> torch.Tensor:
        p_rgb = self.in_proj(x_rgb).permute(0, 3, 1, 2).contiguous()      # (B, D, H, W)
        p_e = self.in_proj_modalx(x_e).permute(0, 3, 1, 2).contiguous()
        y_rgb, y_e = self.scan_concat(F.silu(self.conv2d(p_rgb)), F.silu(self.conv2d_modalx(p_e)))
        b, d = p_rgb.shape[:2]
        gate_rgb = self.fc1(self.avg_pool(p_rgb).view(b, d)).view(b, 1, 1, d)
        gate_e = self.fc2(self.avg_pool(p_e).view(b, d)).view(b, 1, 1, d)
        y = torch.cat([y_rgb * gate_e, y_e * gate_rgb], dim=-1)
        return self.dropout(self.out_proj(y))


class ConMB(nn.Module):
    """ConMB block: ``x_rgb + x_e + DropPath(op(x_rgb, x_e))``, channels-last."""

    def __init__(self, dim: int, d_state: int = 4, ssm_ratio: float = 2.0,
                 drop_path: float = 0.0, **kwargs):
        super().__init__()
        self.op = ConMBMixer(dim, d_state=d_state, ssm_ratio=ssm_ratio, **kwargs)
        self.drop_path = DropPath(drop_path)

    def forward(self, x_rgb: torch.Tensor, x_e: torch.Tensor) -> torch.Tensor:
        return x_rgb + x_e + self.drop_path(self.op(x_rgb, x_e))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2).contiguous()


class _SigmaFusionBase(FusionModule):
    kind = "stage"
    use_cromb = True
    use_conmb = True

    def __init__(self, channels: list[int], d_state: int = 4, ssm_ratio: float = 2.0,
                 drop_path: float = 0.0):
        super().__init__(channels)
        if self.use_cromb:
            self.cross_mamba = nn.ModuleList(
                CroMB(c, d_state=d_state, ssm_ratio=ssm_ratio, drop_path=drop_path)
                for c in channels)
        if self.use_conmb:
            self.channel_attn_mamba = nn.ModuleList(
                ConMB(c, d_state=d_state, ssm_ratio=ssm_ratio, drop_path=drop_path)
                for c in channels)

    def forward(self, stage_index: int, feat_a: torch.Tensor, feat_b: torch.Tensor):
        if feat_a.shape != feat_b.shape:
            raise ValueError(f"{self.registry_name} fusion at stage {stage_index}: streams have "
                             f"shapes {tuple(feat_a.shape)} and {tuple(feat_b.shape)}")
        a, b = _channels_last(feat_a), _channels_last(feat_b)
        if self.use_cromb:
            a, b = self.cross_mamba[stage_index](a, b)
        fused = self.channel_attn_mamba[stage_index](a, b) if self.use_conmb else a + b
        return _channels_first(fused)


@register_fusion("sigma")
class SigmaFusion(_SigmaFusionBase):
    summary = "Sigma: CroMB (cross-C selective scan) then ConMB (concat scan + cross SE gates)"


@register_fusion("cromb")
class CroMBFusion(_SigmaFusionBase):
    summary = "Sigma's CroMB alone; the two cross-scanned streams are summed"
    use_conmb = False


@register_fusion("conmb")
class ConMBFusion(_SigmaFusionBase):
    summary = "Sigma's ConMB alone on the raw stage features"
    use_cromb = False
