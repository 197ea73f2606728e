"""The diffusion mask head of Mamba-Diffusion: DDP's segmentor logic (bit embedding of the label
map, cosine logSNR schedule, DDIM sampling) around the time-conditioned deformable-attention
head (models/heads/diffusion_attn.py), fed by the FPN + multi-stage-merging neck
(models/heads/fpn_neck.py). Sources: docs/models.md, "Mamba-Diffusion".

Upstream: WenliangDu/MambaDiffusion ``mmseg/models/segmentors/ddp.py`` (DDP, Ji et al. 2023),
config ``timesteps=3, bit_scale=0.01``, defaults ``noise_schedule="cosine"``,
``diffusion="ddim"``, ``randsteps=1``, ``time_difference=1``, ``sample_range=(0, 0.999)``,
``learned_sinusoidal_dim=16``. Reproduced from that file's behaviour, not its code.

Training (``loss``), on the neck output x (B, C, h, w) at 1/4 of the input:
    gt  -> nearest-resized to (h, w); 255 -> class K (an extra "ignore" embedding row)
    z0  = (sigmoid(Embedding(K + 1, C)[gt]) * 2 - 1) * bit_scale
    t   ~ U(sample_range) per sample; logSNR(t) = -log(cos((t + 2e-4) / (1 + 2.5e-4) pi/2)^-2 - 1)
          (the log's argument clamped to >= 1e-5 as upstream)
    z_t = sqrt(sigmoid(logSNR)) z0 + sqrt(sigmoid(-logSNR)) eps
    feat = transform(cat[x, z_t])            1x1 conv 2C -> C (with bias, no norm)
    time = time_mlp(logSNR)                  [logSNR, sin 2 pi w logSNR, cos ...] (learned w, 8
                                             frequencies -> 17) -> Linear 4C -> GELU -> Linear 4C
    logits = DeformableHeadWithTime(feat, time); CE against the full-size label after a bilinear
    resize of the logits (mmseg ``BaseDecodeHead.losses``), weight 1.

Inference (``sample``): z ~ N(0, I) of x's shape (from a generator seeded with ``seed``, so a
call is deterministic; ``seed=None`` uses the global RNG as upstream). For s = 0..T-1:
t_now = 1 - s / T, t_next = max(1 - (s + 1 + time_difference) / T, 0); logits at t_now;
z0_hat = bit embedding of argmax(logits); eps_hat = (z - alpha z0_hat) / max(sigma, 1e-8);
z = alpha_next z0_hat + sigma_next eps_hat. The last step's logits are returned (at 1/4; the
model resizes them to the input).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.heads.diffusion_attn import DeformableHeadWithTime
from models.heads.fpn_neck import FPNMergeNeck
from models.layers import kaiming_fan_out_
from models.losses import cross_entropy


def alpha_cosine_log_snr(t: torch.Tensor, ns: float = 2e-4, ds: float = 2.5e-4) -> torch.Tensor:
    """DDP's cosine schedule in logSNR: -log(cos((t + ns) / (1 + ds) pi/2)^-2 - 1), with the
    log's argument clamped at 1e-5 (upstream ``log(..., eps=1e-5)``)."""
    ratio = torch.cos((t + ns) / (1 + ds) * math.pi * 0.5) ** -2 - 1
    return -torch.log(ratio.clamp(min=1e-5))


def log_snr_to_alpha_sigma(log_snr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.sqrt(torch.sigmoid(log_snr)), torch.sqrt(torch.sigmoid(-log_snr))


class LearnedSinusoidalEmbedding(nn.Module):
    """Crowson's learned sinusoidal embedding: x -> [x, sin(2 pi w x), cos(2 pi w x)], dim + 1."""

    def __init__(self, dim: int = 16):
        super().__init__()
        if dim % 2:
            raise ValueError(f"learned sinusoidal dim must be even, got {dim}")
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]
        freqs = x * self.weights[None, :] * 2 * math.pi
        return torch.cat((x, freqs.sin(), freqs.cos()), dim=-1)


class DiffusionMaskHead(nn.Module):
    """Neck + DDP diffusion head. ``neck(features) -> x``; ``loss(x, target) -> dict``;
    ``sample(x) -> logits``; ``forward(features) -> logits`` (neck then DDIM sampling)."""

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 256,
                 num_groups: int = 32, num_layers: int = 6, num_heads: int = 8,
                 num_points: int = 4, ffn_channels: int = 1024, timesteps: int = 3,
                 bit_scale: float = 0.01, time_difference: int = 1,
                 sample_range: tuple[float, float] = (0.0, 0.999),
                 learned_sinusoidal_dim: int = 16, ignore_index: int = 255,
                 seed: int | None = 0, avg_non_ignore: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.channels = channels
        self.timesteps = timesteps
        self.bit_scale = bit_scale
        self.time_difference = time_difference
        self.sample_range = tuple(sample_range)
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore  # False: mmseg's CrossEntropyLoss default
        self.seed = seed
        self.neck = FPNMergeNeck(in_channels, channels, num_groups)
        self.embedding_table = nn.Embedding(num_classes + 1, channels)
        self.transform = nn.Conv2d(2 * channels, channels, 1)
        kaiming_fan_out_(self.transform)  # mmcv ConvModule's init (no norm: it keeps its bias)
        time_dim = 4 * channels
        self.time_mlp = nn.Sequential(
            LearnedSinusoidalEmbedding(learned_sinusoidal_dim),
            nn.Linear(learned_sinusoidal_dim + 1, time_dim), nn.GELU(),
            nn.Linear(time_dim, time_dim))
        self.decode_head = DeformableHeadWithTime(channels, num_classes, num_layers, num_heads,
                                                  num_points, ffn_channels, time_dim)

    # ------------------------------------------------------------------ pieces
    def encode_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, h, w) class ids (K for ignore) -> the analog-bit map (B, C, h, w) in
        [-bit_scale, bit_scale]."""
        emb = self.embedding_table(labels).permute(0, 3, 1, 2)
        return (torch.sigmoid(emb) * 2 - 1) * self.bit_scale

    def denoise(self, x: torch.Tensor, z: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, h, w) from the image features and the noisy map at ``log_snr`` (B,)."""
        feat = self.transform(torch.cat([x, z], dim=1))
        return self.decode_head(feat, self.time_mlp(log_snr))

    def sampling_times(self) -> list[tuple[float, float]]:
        lo = self.sample_range[0]
        steps = self.timesteps
        return [(1 - s / steps * (1 - lo),
                 max(1 - (s + 1 + self.time_difference) / steps * (1 - lo), lo))
                for s in range(steps)]

    # ------------------------------------------------------------------ train / infer
    def loss(self, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        gt = F.interpolate(target[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        gt = torch.where(gt == self.ignore_index, torch.full_like(gt, self.num_classes), gt)
        if bool(((gt < 0) | (gt > self.num_classes)).any()):
            raise ValueError(f"labels must lie in [0, {self.num_classes}) or be "
                             f"{self.ignore_index}; got values outside")
        z0 = self.encode_labels(gt)
        lo, hi = self.sample_range
        t = torch.empty(b, device=x.device, dtype=x.dtype).uniform_(lo, hi)
        log_snr = alpha_cosine_log_snr(t)
        alpha, sigma = log_snr_to_alpha_sigma(log_snr.view(b, 1, 1, 1))
        z_t = alpha * z0 + sigma * torch.randn_like(z0)
        logits = self.denoise(x, z_t, log_snr)
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                               align_corners=False)
        loss = cross_entropy(logits, target, ignore_index=self.ignore_index,
                             avg_non_ignore=self.avg_non_ignore)
        return {"loss_decode": loss, "logits": logits}

    @torch.no_grad()
    def sample(self, x: torch.Tensor, seed: int | None | str = "default") -> torch.Tensor:
        seed = self.seed if seed == "default" else seed
        b = x.shape[0]
        if seed is None:
            z = torch.randn_like(x)
        else:
            gen = torch.Generator(device=x.device).manual_seed(int(seed))
            z = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        logits = None
        for t_now, t_next in self.sampling_times():
            log_snr = alpha_cosine_log_snr(x.new_full((b,), t_now))
            log_snr_next = alpha_cosine_log_snr(x.new_full((b,), t_next))
            alpha, sigma = log_snr_to_alpha_sigma(log_snr.view(b, 1, 1, 1))
            alpha_next, sigma_next = log_snr_to_alpha_sigma(log_snr_next.view(b, 1, 1, 1))
            logits = self.denoise(x, z, log_snr)
            z0_hat = self.encode_labels(logits.argmax(dim=1))
            eps_hat = (z - alpha * z0_hat) / sigma.clamp(min=1e-8)
            z = alpha_next * z0_hat + sigma_next * eps_hat
        return logits

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.sample(self.neck(features))
