"""The Mamba v1 mixer (state-spaces/mamba ``mamba_ssm/modules/mamba_simple.py``, class ``Mamba``)
on the kernels/ API, so that FLOP counters see ``CausalConv1dFn`` and ``SelectiveScanFn``.

Path of one call on tokens x (B, L, d_model), as upstream's reference path ``mamba_inner_ref``:

    [x, z] = in_proj(x)                      (no bias), each (B, d_inner, L)
    x      = SiLU(causal depthwise conv1d(x))   width d_conv, with bias
    [dt, B, C] = x_proj(x)                   (no bias), dt_rank + 2 * d_state
    dt     = dt_proj.weight @ dt             the bias goes to the scan as ``delta_bias``
    y      = selective_scan(x, dt, A = -exp(A_log), B, C, D, z, delta_bias, delta_softplus=True)
    out    = out_proj(y)                     (no bias)

Parameter names and shapes are upstream's (``conv1d`` stays an ``nn.Conv1d`` of weight
(d_inner, 1, d_conv) so mamba_ssm checkpoints load unchanged). Initialisation is upstream's:
``A_log = log(1..d_state)`` per channel, ``D = 1``, ``dt_proj.weight ~ U(-s, s)`` with
``s = dt_rank ** -0.5 * dt_scale``, ``dt_proj.bias = softplus^-1(dt)`` with dt log-uniform in
[dt_min, dt_max] clamped to dt_init_floor; the bias carries ``_no_reinit`` as upstream.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y, written as mamba_simple does (y + log(-expm1(-y)))."""
    return y + torch.log(-torch.expm1(-y))


class MambaMixer(nn.Module):
    """mamba_ssm's ``Mamba`` (v1) with its default settings; ``forward(x: (B, L, d_model))``."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False):
        super().__init__()
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

        dt_init_std = self.dt_rank ** -0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                self.dt_proj.weight.fill_(dt_init_std)
            else:
                self.dt_proj.weight.uniform_(-dt_init_std, dt_init_std)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
                           + math.log(dt_min)).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(inverse_softplus(dt))
        self.dt_proj.bias._no_reinit = True

        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(hidden).transpose(1, 2).contiguous()         # (B, 2*d_inner, L)
        x, z = xz.chunk(2, dim=1)
        x = kernels.causal_conv1d(x, self.conv1d.weight[:, 0, :], self.conv1d.bias, "silu")
        x_dbl = self.x_proj(x.transpose(1, 2))                          # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)          # (B, d_inner, L)
        y = kernels.selective_scan(
            x, dt.contiguous(), -torch.exp(self.A_log.float()), B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(), self.D.float(), z=z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
        )
        return self.out_proj(y.transpose(1, 2))
