"""SS2D, VMamba's 2-D selective-scan mixer, on the kernels/ API (docs/models.md, "VMamba").

One call on channels-last tokens x (B, H, W, C), with D = ssm_ratio * C, K scan orders
(``scan_mode``: cross4 K=4, bidir K=2, unidir K=1), N = d_state, R = dt_rank:

    [x, z] = in_proj(x)                    Linear(C -> 2D, no bias); without the z gate C -> D
    x      = SiLU(dwconv3x3(x))            channels-first for the conv
    xs     = cross_scan(x)                 (B, K, D, L), L = H*W
    [dt | B | C] = x_proj_weight[k] @ xs[k]        (K, R+2N, D), one set per scan order
    dt     = dt_projs_weight[k] @ dt                (K, D, R); its bias goes to the scan
    y      = selective_scan(xs, dt, -exp(A_logs), B, C, Ds, delta_bias, softplus)
    y      = out_norm(cross_merge(y))      LayerNorm(D) on channels-last
    y      = y * SiLU(z)                   if the z gate is on (v0), not in v2 ("_noz")
    out    = out_proj(y)                   Linear(D -> C, no bias)

B and C of the K orders reach the scan as K groups (B, K, N, L): group k serves the channels of
order k, so all K orders run in one ``selective_scan`` call, as upstream's ``forward_core``.

Parameter names and shapes are upstream's (VMamba ``SS2D`` v0 / v2, Sigma
``models/encoders/vmamba.py``), so official checkpoints load without renaming:
``in_proj``, ``conv2d``, ``x_proj_weight``, ``dt_projs_weight``, ``dt_projs_bias``, ``A_logs``,
``Ds``, ``out_norm``, ``out_proj``.

Initialisation as upstream: ``A_logs = log(1..N)`` per channel, ``Ds = 1``; ``dt_projs_weight ~
U(+-R^-0.5 * dt_scale)``; ``dt_projs_bias = softplus^-1(dt)``, dt log-uniform in [dt_min,
dt_max] clamped to >= dt_init_floor; ``x_proj_weight ~ U(+-D^-0.5)`` (the default init of the
``nn.Linear`` upstream stacks it from). ``A_logs``/``Ds`` carry ``_no_weight_decay``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from models.backbones.mamba_block import inverse_softplus
from models.layers import DropPath, Mlp


def resolve_dt_rank(dt_rank: int | str, d_model: int) -> int:
    return math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)


def init_dt_bias(d_inner: int, copies: int, dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4) -> torch.Tensor:
    """softplus^-1 of dt ~ logU[dt_min, dt_max] clamped to dt_init_floor, shape (copies, D)."""
    dt = torch.exp(torch.rand(copies, d_inner) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=dt_init_floor)
    return inverse_softplus(dt)


def init_A_log(d_state: int, rows: int) -> torch.Tensor:
    """log(1..N) for each of ``rows`` channels (S4D-real initialisation)."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(rows, 1)


def add_directional_ssm_params(module: nn.Module, k: int, d_inner: int, d_state: int, rank: int,
                               dt_scale: float = 1.0, dt_min: float = 0.001, dt_max: float = 0.1,
                               dt_init_floor: float = 1e-4) -> None:
    """Give ``module`` the K independent SSM parameter sets that ``directional_ssm`` reads, with
    upstream's names and initialisation (VMamba ``SS2D.__init__``): x_proj U(±d_inner^-0.5),
    dt_proj U(±rank^-0.5·dt_scale), dt bias = softplus^-1(dt), A_log = log(1..N), D = 1; A_log
    and D carry no weight decay."""
    bound = d_inner ** -0.5
    module.x_proj_weight = nn.Parameter(
        torch.empty(k, rank + 2 * d_state, d_inner).uniform_(-bound, bound))
    dt_std = rank ** -0.5 * dt_scale
    module.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, rank).uniform_(-dt_std, dt_std))
    module.dt_projs_bias = nn.Parameter(init_dt_bias(d_inner, k, dt_min, dt_max, dt_init_floor))
    module.A_logs = nn.Parameter(init_A_log(d_state, k * d_inner))
    module.Ds = nn.Parameter(torch.ones(k * d_inner))
    module.A_logs._no_weight_decay = True
    module.Ds._no_weight_decay = True


def directional_ssm(ssm: nn.Module, xs: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """K independent selective scans in one call, VMamba's ``forward_corev0``: per direction k,
    ``[dt | B | C] = x_proj[k] · x`` and ``dt = dt_proj[k] · dt``, then one scan over all K·D
    channels with B / C grouped by direction (G = K), softplus(dt + bias), A = -exp(A_log).

    ``ssm`` carries upstream's parameter names (``x_proj_weight`` (K, R+2N, D),
    ``dt_projs_weight`` (K, D, R), ``dt_projs_bias`` (K, D), ``A_logs`` (K·D, N), ``Ds`` (K·D))
    and ``dt_rank`` / ``d_state``; ``xs`` is (B, K, D, L). Returns (B, K·D, L)."""
    b, _, _, length = xs.shape
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, ssm.x_proj_weight)
    dts, Bs, Cs = torch.split(x_dbl, [ssm.dt_rank, ssm.d_state, ssm.d_state], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, ssm.dt_projs_weight)
    return kernels.selective_scan(
        xs.reshape(b, -1, length), dts.reshape(b, -1, length),
        -torch.exp(ssm.A_logs.float()), Bs.contiguous(), Cs.contiguous(), ssm.Ds.float(),
        delta_bias=ssm.dt_projs_bias.reshape(-1).float(), delta_softplus=True, backend=backend,
    )


class SS2D(nn.Module):
    """VMamba's SS2D; ``forward(x: (B, H, W, C)) -> (B, H, W, C)`` (see module docstring)."""

    def __init__(self, d_model: int, d_state: int = 16, ssm_ratio: float = 2.0,
                 dt_rank: int | str = "auto", d_conv: int = 3, conv_bias: bool = True,
                 use_z_gate: bool = True, scan_mode: str = "cross4", bias: bool = False,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_scale: float = 1.0,
                 dt_init_floor: float = 1e-4, dropout: float = 0.0, backend: str = "auto"):
        super().__init__()
        if scan_mode not in kernels.SCAN_MODES:
            raise ValueError(f"unknown scan_mode {scan_mode!r}; known: {list(kernels.SCAN_MODES)}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = d_inner = int(ssm_ratio * d_model)
        self.dt_rank = rank = resolve_dt_rank(dt_rank, d_model)
        self.scan_mode = scan_mode
        self.k = k = kernels.SCAN_MODES[scan_mode]
        self.use_z_gate = use_z_gate
        self.backend = backend

        self.in_proj = nn.Linear(d_model, d_inner * (2 if use_z_gate else 1), bias=bias)
        self.conv2d = (nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2,
                                 groups=d_inner, bias=conv_bias) if d_conv > 1 else None)
        add_directional_ssm_params(self, k, d_inner, d_state, rank, dt_scale, dt_min, dt_max,
                                   dt_init_floor)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def scan2d(self, x: torch.Tensor) -> torch.Tensor:
        """The core: (B, D, H, W) channels-first -> (B, H, W, D) merged, before out_norm."""
        b, d, h, w = x.shape
        length = h * w
        xs = kernels.cross_scan(x, self.scan_mode)                               # (B, K, D, L)
        y = directional_ssm(self, xs, backend=self.backend)
        y = kernels.cross_merge(y.view(b, self.k, d, length), h, w, self.scan_mode)  # (B, D, L)
        return y.transpose(1, 2).reshape(b, h, w, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(x)
        if self.use_z_gate:
            x, z = xz.chunk(2, dim=-1)
        else:
            x, z = xz, None
        x = x.permute(0, 3, 1, 2).contiguous()
        if self.conv2d is not None:
            x = self.conv2d(x)
        y = self.out_norm(self.scan2d(F.silu(x)).to(xz.dtype))
        if z is not None:
            y = y * F.silu(z)
        return self.dropout(self.out_proj(y))


#: per block version: z gate, dwconv bias, d_state, MLP ratio (VMamba v0: 2024-02 checkpoints;
#: v2: forward type "v05_noz", SSM_CONV_BIAS false, d_state 1, MLP_RATIO 4)
VSS_VERSIONS = {
    "v0": dict(use_z_gate=True, conv_bias=True, d_state=16, mlp_ratio=0.0),
    "v2": dict(use_z_gate=False, conv_bias=False, d_state=1, mlp_ratio=4.0),
}


class VSSBlock(nn.Module):
    """``x + DropPath(SS2D(LN x))`` then, when ``mlp_ratio > 0``, ``x + DropPath(MLP(LN x))``.

    Channels-last (B, H, W, C). ``d_state`` / ``mlp_ratio`` / ``use_z_gate`` / ``conv_bias``
    left as None take the ``version``'s values (``VSS_VERSIONS``). Key names as upstream:
    ``norm``, ``op``, ``norm2``, ``mlp``."""

    def __init__(self, dim: int, drop_path: float = 0.0, d_state: int | None = None,
                 ssm_ratio: float = 2.0, mlp_ratio: float | None = None, version: str = "v0",
                 dt_rank: int | str = "auto", d_conv: int = 3, conv_bias: bool | None = None,
                 use_z_gate: bool | None = None, scan_mode: str = "cross4",
                 norm_eps: float = 1e-5, **ss2d_kwargs):
        super().__init__()
        if version not in VSS_VERSIONS:
            raise ValueError(f"unknown VSS block version {version!r}; known: {list(VSS_VERSIONS)}")
        preset = VSS_VERSIONS[version]
        d_state = preset["d_state"] if d_state is None else d_state
        mlp_ratio = preset["mlp_ratio"] if mlp_ratio is None else mlp_ratio
        conv_bias = preset["conv_bias"] if conv_bias is None else conv_bias
        use_z_gate = preset["use_z_gate"] if use_z_gate is None else use_z_gate
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.op = SS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank, d_conv=d_conv,
                       conv_bias=conv_bias, use_z_gate=use_z_gate, scan_mode=scan_mode,
                       **ss2d_kwargs)
        self.drop_path = DropPath(drop_path)
        if mlp_ratio > 0:
            self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
            self.mlp = Mlp(dim, int(dim * mlp_ratio))
        else:
            self.norm2 = self.mlp = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x
