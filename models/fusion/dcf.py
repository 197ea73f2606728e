"""Mamba-Diffusion's DCF block and the paired-stream fusion both its fusions build on
(WenliangDu/MambaDiffusion ``mmseg/models/backbones/fuse_mamba.py``: ``FusionSS2D`` forward
type "fusev1_v05_noz", ``FusionVSSBlock``, ``Fusion_VSSM.forward``; docs/models.md,
"Mamba-Diffusion").

Upstream defines the blocks in code (the release is complete for them); this module follows
that code's behaviour, not the paper's figures, and keeps its quirks on purpose (see below).
The paper publishes no parameter count for them.

DCF mixer m(P, Q), channels-last (B, H, W, C), D = ssm_ratio C, N = d_state, R = ceil(C/16):
    xP = SiLU(dwconv_a(in_proj_a P)), xQ = SiLU(dwconv_b(in_proj_b Q))    (C -> D, no z gate)
    sP, sQ = cross_scan(xP), cross_scan(xQ)                                (B, 4, D, L)
    src    = [sP_0, sP_1, sQ_2, sQ_3]     directions 0, 1 from P; the reversed 2, 3 from Q
    [dt | B | C] = x_proj[k] src_k;  dt = dt_proj[k] dt                    (shared parameters)
    y  = cross_merge(selective_scan(u = sP, dt, A, B, C, D, dt bias, softplus))
    out = out_proj_a(LN_D(y))
So Q steers P's scan (its step sizes and its input/output matrices on the reversed
directions) while the state carries P's own content.

DCF block: ``A + DP(m_a(LN_A A, LN_B B))``, ``B + DP(m_b(LN_B B, LN_A A))``, then per stream
``x + DP(MLP(LN2 x))`` (MLP ratio 4, GELU).

Paired-stream fusion (``PairedStreamFusion``), at stage i on the two streams' features:
    (a, b) = blocks_i(oA, oB)            DCF and/or DS-S4 blocks, in that order
    oA, oB = oA + a, oB + b              ``interact``: the streams continue with these
    out    = LN_a(oA) + LN_b(oB)         ``merge``: the stage's fused feature
Mamba-Diffusion's own encoder feeds oA, oB back into the next stage (models/zoo/
mamba_diffusion.py); as a registered ``stage`` fusion on any other encoder (``forward``) the
streams run unchanged and only the fused map reaches the head.

Upstream quirks kept:
- Each mixer computes, and has parameters for, a second output (``out_proj_b``) that the block
  discards (the config sets ``find_unused_parameters=True``). ``upstream_unused=True`` builds
  those weights so the parameter count (410.3M at the paper size) and the checkpoint keys match
  upstream; they never get a gradient. By default they are left out.
- Drop-path rates of the fusion blocks are read off the *backbone's* linspace(0, rate, 21) at
  the fusion blocks' own cumulative indices (``schedule_len``), not off a schedule of their own.
Parameter names are upstream's (``m_a.in_proj_a``, ``m_a.x_proj_weight``, ``norm_A``,
``mlp_A.fc1``, ...). Initialisation: the SS2D raw parameters as models/backbones/ss2d.py, Linear
trunc_normal(0.02) with zero bias and LayerNorm (1, 0) as upstream ``VSSM._init_weights``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

import kernels
from models.backbones.ss2d import add_directional_ssm_params, resolve_dt_rank
from models.fusion.base import FusionModule
from models.layers import DropPath, Mlp, trunc_normal_init_
from models.registry import register_fusion

K_DIRECTIONS = 4


class PairedMixerBase(nn.Module):
    """What the two fusion mixers share: per-stream in_proj / dwconv, one set of 4-direction SSM
    parameters, one output LayerNorm, per-stream out_proj (upstream names)."""

    def __init__(self, d_model: int, d_state: int = 1, ssm_ratio: float = 2.0,
                 dt_rank: int | str = "auto", d_conv: int = 3, conv_bias: bool = False,
                 z_gate: bool = False, upstream_unused: bool = False, backend: str = "auto"):
        super().__init__()
        self.d_model, self.d_state = d_model, d_state
        self.d_inner = d_inner = int(ssm_ratio * d_model)
        self.dt_rank = rank = resolve_dt_rank(dt_rank, d_model)
        self.backend = backend
        proj = d_inner * (2 if z_gate else 1)
        self.in_proj_a = nn.Linear(d_model, proj, bias=False)
        self.in_proj_b = nn.Linear(d_model, proj, bias=False)
        self.conv2d_a = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2,
                                  groups=d_inner, bias=conv_bias)
        self.conv2d_b = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2,
                                  groups=d_inner, bias=conv_bias)
        k = K_DIRECTIONS
        add_directional_ssm_params(self, k, d_inner, d_state, rank)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj_a = nn.Linear(d_inner, d_model, bias=False)
        # upstream's second output, computed and discarded by the block (see module docstring)
        self.out_proj_b = nn.Linear(d_inner, d_model, bias=False) if upstream_unused else None

    @staticmethod
    def conv_act(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, D) channels-last -> SiLU(dwconv) channels-first (B, D, H, W)."""
        return torch.nn.functional.silu(conv(x.permute(0, 3, 1, 2).contiguous()))

    def scan(self, u_seqs: torch.Tensor, src_seqs: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The shared SSM core on scan sequences (B, 4, D, L): Δ, B, C from ``src_seqs``, the
        scanned input ``u_seqs``; -> merged (B, H, W, D) before the output norm."""
        b, k, d, length = u_seqs.shape
        x_dbl = torch.einsum("bkdl,kcd->bkcl", src_seqs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        y = kernels.selective_scan(
            u_seqs.reshape(b, -1, length), dts.reshape(b, -1, length),
            -torch.exp(self.A_logs.float()), Bs.contiguous(), Cs.contiguous(), self.Ds.float(),
            delta_bias=self.dt_projs_bias.reshape(-1).float(), delta_softplus=True,
            backend=self.backend)
        y = kernels.cross_merge(y.view(b, k, d, length), h, w, "cross4")
        return y.transpose(1, 2).reshape(b, h, w, d).to(u_seqs.dtype)


class DCFMixer(PairedMixerBase):
    """Upstream ``FusionSS2D`` "fusev1_v05_noz": ``forward(P, Q) -> P's output`` (see module
    docstring); no z gate."""

    def __init__(self, d_model: int, **kwargs):
        super().__init__(d_model, z_gate=False, **kwargs)

    def forward(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        h, w = p.shape[1:3]
        xp = self.conv_act(self.conv2d_a, self.in_proj_a(p))
        xq = self.conv_act(self.conv2d_b, self.in_proj_b(q))
        sp = kernels.cross_scan(xp, "cross4")
        sq = kernels.cross_scan(xq, "cross4")
        src = torch.cat([sp[:, :2], sq[:, 2:]], dim=1)
        return self.out_proj_a(self.out_norm(self.scan(sp, src, h, w)))


class PairedBlock(nn.Module):
    """Upstream ``FusionVSSBlock`` / ``FusionVSSBlockv2``: a mixer per stream (each sees both
    normalised streams, its own first), residual with drop path, then a per-stream MLP."""

    def __init__(self, make_mixer: Callable[[], nn.Module], dim: int, drop_path: float = 0.0,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_A = nn.LayerNorm(dim)
        self.norm_B = nn.LayerNorm(dim)
        self.m_a = make_mixer()
        self.m_b = make_mixer()
        self.drop_path = DropPath(drop_path)
        if mlp_ratio > 0:
            self.norm2_A = nn.LayerNorm(dim)
            self.norm2_B = nn.LayerNorm(dim)
            self.mlp_A = Mlp(dim, int(dim * mlp_ratio))
            self.mlp_B = Mlp(dim, int(dim * mlp_ratio))
        else:
            self.mlp_A = self.mlp_B = None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        na, nb = self.norm_A(a), self.norm_B(b)
        a = a + self.drop_path(self.m_a(na, nb))
        b = b + self.drop_path(self.m_b(nb, na))
        if self.mlp_A is not None:
            a = a + self.drop_path(self.mlp_A(self.norm2_A(a)))
            b = b + self.drop_path(self.mlp_B(self.norm2_B(b)))
        return a, b


def drop_path_rates(depths: Sequence[int], rate: float,
                    schedule_len: int | None) -> list[list[float]]:
    """Per stage, the blocks' rates: linspace(0, rate, max(schedule_len, sum(depths))) read at
    the blocks' cumulative indices (upstream reads the backbone's schedule, see module
    docstring)."""
    total = max(schedule_len or 0, sum(depths))
    rates = torch.linspace(0, rate, max(total, 1), device="cpu").tolist()
    out, start = [], 0
    for depth in depths:
        out.append(rates[start:start + depth])
        start += depth
    return out


def stage_depths(depths: int | Sequence[int], num_stages: int, name: str) -> list[int]:
    if isinstance(depths, int):
        return [depths] * num_stages
    depths = list(depths)
    if len(depths) != num_stages:
        raise ValueError(f"{name} has {len(depths)} entries for an encoder with {num_stages} "
                         f"stages; give one depth per stage (or a single int)")
    return depths


class PairedStreamFusion(FusionModule):
    """Stage fusion by paired-stream blocks plus per-stream output norms (module docstring).

    Subclasses map their block kinds, in the order the blocks run, to the mixer each block
    builds in ``mixers``: {"dcf": DCFMixer}, {"ds_s4": DSS4Mixer} or both."""

    mixers: dict[str, type[PairedMixerBase]] = {}
    #: default depths per kind for a 4-stage encoder (the paper's), else 2 per stage for DCF
    DEFAULT_DEPTHS = {"dcf": (2, 2, 2, 2), "ds_s4": (2, 2, 4, 2)}
    feeds_back = True  # Mamba-Diffusion's encoder continues from ``interact``'s streams

    def __init__(self, channels: list[int], dcf_depths: int | Sequence[int] | None = None,
                 ds_s4_depths: int | Sequence[int] | None = None, d_state: int = 1,
                 ssm_ratio: float = 2.0, mlp_ratio: float = 4.0, conv_bias: bool = False,
                 drop_path_rate: float = 0.0, schedule_len: int | None = None,
                 upstream_unused: bool = False, backend: str = "auto"):
        super().__init__(channels)
        given = {"dcf": dcf_depths, "ds_s4": ds_s4_depths}
        n = len(channels)
        self.blocks = nn.ModuleList(nn.ModuleList() for _ in channels)
        self.depths = {}
        for kind, mixer in self.mixers.items():
            depths = given[kind]
            if depths is None:
                depths = self.DEFAULT_DEPTHS[kind] if n == 4 else 2
            depths = stage_depths(depths, n, f"{kind}_depths")
            self.depths[kind] = depths
            rates = drop_path_rates(depths, drop_path_rate, schedule_len)
            for i, dim in enumerate(channels):
                mixer_kw = dict(d_state=d_state, ssm_ratio=ssm_ratio, conv_bias=conv_bias,
                                upstream_unused=upstream_unused, backend=backend)
                def make_mixer(dim=dim, mixer=mixer, kw=mixer_kw):
                    return mixer(dim, **kw)

                self.blocks[i].extend(PairedBlock(make_mixer, dim, rate, mlp_ratio)
                                      for rate in rates[i])
        self.outnorm_a = nn.ModuleList(nn.LayerNorm(c) for c in channels)
        self.outnorm_b = nn.ModuleList(nn.LayerNorm(c) for c in channels)
        self.apply(trunc_normal_init_)  # upstream VSSM._init_weights

    def interact(self, i: int, a: torch.Tensor, b: torch.Tensor):
        """The streams with the fusion residual added (``FusionModule.interact``)."""
        fa, fb = a, b
        for block in self.blocks[i]:
            fa, fb = block(fa, fb)
        return a + fa, b + fb

    def merge(self, i: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LN_a(a) + LN_b(b), channels-first (``FusionModule.merge``)."""
        out = self.outnorm_a[i](a) + self.outnorm_b[i](b)
        return out.permute(0, 3, 1, 2).contiguous()

    def forward(self, stage_index: int, feat_a: torch.Tensor, feat_b: torch.Tensor):
        a = feat_a.permute(0, 2, 3, 1)
        b = feat_b.permute(0, 2, 3, 1)
        return self.merge(stage_index, *self.interact(stage_index, a, b))


@register_fusion("dcf")
class DCFFusion(PairedStreamFusion):
    summary = ("Mamba-Diffusion DCF: SS2D whose reversed scans take Δ, B, C from the other "
               "stream, + MLP; residual into both streams, LN_a + LN_b")
    mixers = {"dcf": DCFMixer}
