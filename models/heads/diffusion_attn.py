"""The time-conditioned deformable-attention head of Mamba-Diffusion / DDP, in plain PyTorch.

Upstream (WenliangDu/MambaDiffusion ``mmseg/models/decode_heads/deformable_head_with_time.py``,
``mmseg/models/utils/transformer.py``; DDP, Ji et al. 2023) builds it on mmcv: the attention is
mmcv's ``MultiScaleDeformableAttention`` (a CUDA op, not part of the release) and the layers come
from mmcv's transformer registry. This module is written from the config and the upstream head's
description (docs/models.md, "Mamba-Diffusion"), with the attention computed by
``F.grid_sample`` (mmcv's ``multi_scale_deformable_attn_pytorch`` semantics, which its CUDA op
matches).

    DeformableHeadWithTime(x: (B, C, H, W), t: (B, time_dim)) -> logits (B, K, H, W)
        tokens q = x flattened (B, HW, C); sine positional encoding p (C/2 features per axis,
        normalised, offset -0.5, scale 2 pi, temperature 10000); reference points at the
        pixel centres ((j + 0.5) / W, (i + 0.5) / H).
        ``num_layers`` x, post-norm (operation order self_attn, norm, ffn, norm):
            q = LN1(q + MSDeformAttn(q, p))          (the attention adds its own identity)
            q = LN2(q + FFN(q))                      Linear(C -> F) -> GELU -> Linear(F -> C)
            [s, b] = Linear(SiLU(t)) : time_dim -> 2C;  q = q (1 + s) + b      (FiLM)
        logits = conv_seg 1x1 (C -> K).

MSDeformAttn (one level here; the code takes any number): per head h and point k,
offsets = Linear(q + p) -> (heads, levels, points, 2), normalised by (W, H) and added to the
reference point; weights = softmax over levels x points of Linear(q + p); values =
value_proj(q) split into heads; sampled bilinearly with zero padding at grid 2 loc - 1
(align_corners=False); weighted sum -> output_proj -> dropout -> + q.

Initialisation as upstream: every weight with more than one dimension Xavier-uniform, then
mmcv's MSDeformAttn init (offset weights 0, offset bias = head direction (cos, sin) scaled to unit
max-norm times (k + 1) for point k; attention weights and bias 0; value/output projections
Xavier-uniform with zero bias).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sine_positional_encoding(batch: int, height: int, width: int, num_feats: int,
                             temperature: float = 10000.0, offset: float = -0.5,
                             scale: float = 2 * math.pi, eps: float = 1e-6,
                             device=None, dtype=torch.float32) -> torch.Tensor:
    """mmcv ``SinePositionalEncoding(normalize=True)`` for an all-valid mask:
    (B, 2 num_feats, H, W), the y features first, then x; within each, sin/cos interleaved."""
    ones = torch.ones(batch, height, width, device=device, dtype=dtype)
    y = ones.cumsum(1)
    x = ones.cumsum(2)
    y = (y + offset) / (y[:, -1:, :] + eps) * scale
    x = (x + offset) / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, device=device, dtype=dtype)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos_x = x[..., None] / dim_t
    pos_y = y[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def reference_points(spatial_shapes: list[tuple[int, int]], device=None) -> torch.Tensor:
    """Pixel-centre reference points of every level, normalised to [0, 1]: (1, sum HW, 1, 2)
    as (x, y)."""
    points = []
    for h, w in spatial_shapes:
        # (arange + 0.5) is upstream's linspace(0.5, n - 0.5, n); arange traces as data movement
        ref_y, ref_x = torch.meshgrid(torch.arange(h, device=device) + 0.5,
                                      torch.arange(w, device=device) + 0.5, indexing="ij")
        points.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
    return torch.cat(points, 0)[None, :, None]


def deformable_attention_sample(value: torch.Tensor, spatial_shapes: list[tuple[int, int]],
                                sampling_locations: torch.Tensor,
                                attention_weights: torch.Tensor) -> torch.Tensor:
    """mmcv's ``multi_scale_deformable_attn_pytorch``.

    value (B, S, heads, d); sampling_locations (B, Q, heads, levels, points, 2) in [0, 1] as
    (x, y); attention_weights (B, Q, heads, levels, points) -> (B, Q, heads * d)."""
    b, _, heads, d = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes):
        v = values[level].flatten(2).transpose(1, 2).reshape(b * heads, d, h, w)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)          # (B*heads, Q, P, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))               # (B*heads, d, Q, P)
    weights = attention_weights.transpose(1, 2).reshape(b * heads, 1, q, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (B*heads, d, Q)
    return out.view(b, heads * d, q).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """mmcv ``MultiScaleDeformableAttention`` (batch-first), see module docstring."""

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 1,
                 num_points: int = 4, dropout: float = 0.0):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} must be divisible by num_heads {num_heads}")
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor,
                ref_points: torch.Tensor, spatial_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """query, query_pos (B, Q, C); ref_points (B or 1, Q, levels or 1, 2); self-attention:
        the values are the queries (without the positional encoding)."""
        b, q, _ = query.shape
        value = self.value_proj(query).view(b, -1, self.num_heads,
                                            self.embed_dims // self.num_heads)
        located = query + query_pos
        offsets = self.sampling_offsets(located).view(
            b, q, self.num_heads, self.num_levels, self.num_points, 2)
        weights = self.attention_weights(located).view(
            b, q, self.num_heads, self.num_levels * self.num_points).softmax(-1)
        weights = weights.view(b, q, self.num_heads, self.num_levels, self.num_points)
        normalizer = query.new_tensor([[w, h] for h, w in spatial_shapes])     # (levels, 2)
        locations = (ref_points[:, :, None, :, None, :]
                     + offsets / normalizer[None, None, None, :, None, :])
        out = deformable_attention_sample(value, spatial_shapes, locations, weights)
        return self.dropout(self.output_proj(out)) + query


class DeformableLayerWithTime(nn.Module):
    """One post-norm DETR encoder layer with deformable self-attention and FiLM on time."""

    def __init__(self, channels: int, num_heads: int, num_points: int, ffn_channels: int,
                 time_dim: int, num_levels: int = 1, dropout: float = 0.0):
        super().__init__()
        self.attn = MultiScaleDeformableAttention(channels, num_heads, num_levels, num_points,
                                                  dropout)
        self.norm1 = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, ffn_channels), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_channels, channels), nn.Dropout(dropout))
        self.norm2 = nn.LayerNorm(channels)
        self.time_mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * channels))

    def forward(self, q, pos, ref_points, spatial_shapes, time_emb):
        q = self.norm1(self.attn(q, pos, ref_points, spatial_shapes))
        q = self.norm2(q + self.ffn(q))
        scale, shift = self.time_mlp(time_emb).unsqueeze(1).chunk(2, dim=-1)
        return q * (1 + scale) + shift


class DeformableHeadWithTime(nn.Module):
    """``forward(x: (B, C, H, W), time_emb: (B, time_dim)) -> logits (B, K, H, W)``."""

    def __init__(self, channels: int, num_classes: int, num_layers: int = 6, num_heads: int = 8,
                 num_points: int = 4, ffn_channels: int = 1024, time_dim: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        if channels % 2:
            raise ValueError(f"the sine encoding needs an even channel count, got {channels}")
        self.channels = channels
        self.layers = nn.ModuleList(
            DeformableLayerWithTime(channels, num_heads, num_points, ffn_channels,
                                    time_dim or 4 * channels, dropout=dropout)
            for _ in range(num_layers))
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        for p in self.parameters():                 # upstream init_weights: Xavier, then MSDA's
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.init_weights()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        pos = sine_positional_encoding(b, h, w, c // 2, device=x.device, dtype=x.dtype)
        q = x.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        refs = reference_points([(h, w)], device=x.device).to(x.dtype)
        for layer in self.layers:
            q = layer(q, pos, refs, [(h, w)], time_emb)
        return self.conv_seg(q.transpose(1, 2).reshape(b, c, h, w))
