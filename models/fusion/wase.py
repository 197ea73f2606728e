"""MS2MNet's per-stage RGB-X fusion (DrWuHonglin/MS2MNet ``models/MS2MNet.py``;
docs/models.md, "MS2MNet"): WASE, optionally followed by the VFE state-space block.

Fusions (kind ``stage``, built from the encoder's per-stage ``channels``, so they fit any
encoder):
    ``wase``      f_i = WASE_i(a_i, b_i)
    ``wase+vfe``  f_i = WASE_i(a_i, b_i);  f_i = f_i + 0.5 * VFE_i(f_i)      (upstream
                  ``residualRate``; VFE is itself residual, as upstream's call implies)

WASE (``WASEFusion``, released code): per modality an SE gate GAP -> 1x1 (C/16) -> ReLU -> 1x1
-> sigmoid; learnable scalars w_a, w_b (init 1) normalised to |w| / sum |w|;
``out = w_a s_a a + w_b s_b b``.

VFE and MSSM are **reconstructed**: the release calls ``VFE(dim, state_dim)`` (returning a pair,
the second discarded) but never defines it. They are built from the README figure
(images/VFE.png, images/MSSM.png; docs/models.md, "MS2MNet") on mlvlab/EfficientViM's
``HSMSSD`` / ``EfficientViMBlock`` and the helper classes the release defines but never uses
(``LayerNorm1D``, ``ConvLayer2D``, ``SqueezeExcite``). Our reading, where the figures leave a
choice:
- VFE, four residual sub-blocks: x + DW3x3-BN(x); x + MSSM(LN x); x + Conv3x3-BN-ReLU(x)
  (dense); x + SE(FFN(x)) with EfficientViM's FFN (1x1-BN-ReLU, 1x1-BN, ratio 4) and the
  release's SqueezeExcite (hidden max(C/4, 8), SiLU). Plain residuals (EfficientViM's sigmoid
  layer scales are not in the figure); the BN closing the DW and FFN branches starts at 0, as
  EfficientViM's ``bn_weight_init=0``.
- MSSM = HSMSSD with MS2MNet's two additions: the depthwise conv on [B, C, dt] is two branches,
  DW3x3 and DW5x5, mixed by a learned per-channel gate g = sigmoid(theta) (theta = 0 at init):
  g * DW3 + (1 - g) * DW5; and a channel attention (SE over the state axis) on the hidden
  state h before the ``hz_proj`` mixer. The rest is HSMSSD: A' = softmax_L(dt + A),
  A ~ U(1, 16); h = x (A' * B)^T (C x S); [h', z] = hz_proj(h); h = out_proj(h' SiLU(z) + D h');
  y = h C.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.fusion.base import FusionModule
from models.registry import register_fusion

#: MS2MNet's VFE state sizes for its four stages (64, 256, 512, 1024 channels)
MS2MNET_STATE_DIMS = (16, 24, 28, 32)


class ChannelGate(nn.Sequential):
    """WASE's SE gate: GAP -> 1x1 (C/r) -> ReLU -> 1x1 -> sigmoid, returned (B, C, 1, 1)."""

    def __init__(self, channels: int, reduction: int = 16):
        hidden = max(channels // reduction, 1)
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1),
                         nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid())


class WASE(nn.Module):
    """Weighted-average squeeze-excitation fusion of two same-shape maps (upstream
    ``WASEFusion``)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.gate_a = ChannelGate(channels, reduction)
        self.gate_b = ChannelGate(channels, reduction)
        self.weight_a = nn.Parameter(torch.ones(1))
        self.weight_b = nn.Parameter(torch.ones(1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        wa, wb = self.weight_a.abs(), self.weight_b.abs()
        total = wa + wb + 1e-8
        return (wa / total) * self.gate_a(a) * a + (wb / total) * self.gate_b(b) * b


class SqueezeExcite(nn.Module):
    """The release's ``SqueezeExcite``: x * sigmoid(1x1(SiLU(1x1(GAP x)))), hidden max(C/4, 8).
    On (B, C, H, W) maps, or on (B, C, S) states (pooled over S)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.flatten(2).mean(-1)
        gate = torch.sigmoid(self.fc2(F.silu(self.fc1(pooled))))
        return x * gate.view(*gate.shape, *([1] * (x.dim() - 2)))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of (B, C, ...) (the release's ``LayerNorm1D``)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class ConvBNAct(nn.Sequential):
    """The release's ``ConvLayer2D``: conv (no bias) -> BN (weight ``bn_weight_init``) -> act."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int = 1,
                 act: bool = True, bn_weight_init: float = 1.0):
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                            groups=groups, bias=False), nn.BatchNorm2d(out_channels)]
        nn.init.constant_(layers[1].weight, bn_weight_init)
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class MSSM(nn.Module):
    """Multi-scale state-space mixer (reconstructed; see module docstring).
    ``forward(x (B, C, H, W) already normalised) -> (y (B, C, H, W), h (B, C, S))``."""

    def __init__(self, dim: int, state_dim: int, ssd_expand: float = 1.0,
                 A_init_range=(1.0, 16.0)):
        super().__init__()
        self.state_dim = state_dim
        self.d_inner = int(ssd_expand * dim)
        bcdt = 3 * state_dim
        self.BCdt_proj = nn.Conv1d(dim, bcdt, 1, bias=False)
        self.dw3 = nn.Conv2d(bcdt, bcdt, 3, padding=1, groups=bcdt, bias=False)
        self.dw5 = nn.Conv2d(bcdt, bcdt, 5, padding=2, groups=bcdt, bias=False)
        self.dw_gate = nn.Parameter(torch.zeros(1, bcdt, 1, 1))
        self.state_attn = SqueezeExcite(dim)
        self.hz_proj = nn.Conv1d(dim, 2 * self.d_inner, 1, bias=False)
        self.out_proj = nn.Conv1d(self.d_inner, dim, 1, bias=False)
        self.A = nn.Parameter(torch.empty(state_dim).uniform_(*A_init_range))
        self.D = nn.Parameter(torch.ones(1))
        self.D._no_weight_decay = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = x.shape
        tokens = x.flatten(2)                                             # (B, C, L)
        bcdt = self.BCdt_proj(tokens).view(batch, -1, height, width)
        gate = torch.sigmoid(self.dw_gate)
        bcdt = (gate * self.dw3(bcdt) + (1 - gate) * self.dw5(bcdt)).flatten(2)
        B, C, dt = torch.split(bcdt, self.state_dim, dim=1)              # (B, S, L) each
        A = (dt + self.A.view(1, -1, 1)).softmax(dim=-1)                 # softmax over L
        h = tokens @ (A * B).transpose(1, 2)                              # (B, C, S)
        h = self.state_attn(h)
        h, z = torch.split(self.hz_proj(h), self.d_inner, dim=1)
        h = self.out_proj(h * F.silu(z) + h * self.D)                     # (B, C, S)
        y = h @ C                                                         # (B, C, L)
        return y.view(batch, -1, height, width), h


class VFE(nn.Module):
    """Visual feature enhancement block (reconstructed; see module docstring).
    ``forward(x) -> (x', h)`` like EfficientViM's block: x' includes x (residual)."""

    def __init__(self, dim: int, state_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dwconv = ConvBNAct(dim, dim, 3, groups=dim, act=False, bn_weight_init=0.0)
        self.norm = ChannelLayerNorm(dim)
        self.mixer = MSSM(dim, state_dim)
        self.conv = ConvBNAct(dim, dim, 3)
        self.ffn = nn.Sequential(ConvBNAct(dim, hidden, 1),
                                 ConvBNAct(hidden, dim, 1, act=False, bn_weight_init=0.0))
        self.se = SqueezeExcite(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + self.dwconv(x)
        mixed, h = self.mixer(self.norm(x))
        x = x + mixed
        x = x + self.conv(x)
        return x + self.se(self.ffn(x)), h


def stage_state_dims(num_stages: int, state_dims=None) -> list[int]:
    """MS2MNet's 16/24/28/32 for four stages; other stage counts take the first ones, or
    repeat the last."""
    dims = list(state_dims or MS2MNET_STATE_DIMS)
    if state_dims is not None and len(dims) != num_stages:
        raise ValueError(f"state_dims has {len(dims)} entries for {num_stages} stages")
    return (dims + [dims[-1]] * num_stages)[:num_stages]


@register_fusion("wase")
class WASEStageFusion(FusionModule):
    kind = "stage"
    summary = "MS2MNet WASE: SE-gated sum of the two streams with normalised learnable weights"

    def __init__(self, channels: list[int], reduction: int = 16):
        super().__init__(channels)
        self.wase = nn.ModuleList(WASE(c, reduction) for c in channels)

    def forward(self, stage_index: int, feat_a: torch.Tensor, feat_b: torch.Tensor):
        return self.wase[stage_index](feat_a, feat_b)


@register_fusion("wase+vfe")
class WASEVFEStageFusion(WASEStageFusion):
    summary = "MS2MNet WASE + VFE: WASE, then f + 0.5 VFE(f) (EfficientViM-style SSM block)"

    def __init__(self, channels: list[int], reduction: int = 16, state_dims=None,
                 residual_rate: float = 0.5, mlp_ratio: float = 4.0):
        super().__init__(channels, reduction)
        self.residual_rate = residual_rate
        self.vfe = nn.ModuleList(VFE(c, s, mlp_ratio) for c, s in
                                 zip(channels, stage_state_dims(len(channels), state_dims)))

    def forward(self, stage_index: int, feat_a: torch.Tensor, feat_b: torch.Tensor):
        fused = super().forward(stage_index, feat_a, feat_b)
        enhanced, _ = self.vfe[stage_index](fused)
        return fused + self.residual_rate * enhanced
