"""Attention blocks that a fusion module and a head both use: MS2MNet's spatial attention and
ASAF (its fusion ``asaf`` and its HFP decoder), ReMamber's image-text correlation (its fusion
``twister`` and its Mamba head)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SpatialAttention(nn.Module):
    """sigmoid(conv([channel mean, channel max])) -> (B, 1, H, W)."""

    def __init__(self, kernel_size: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class ASAF(nn.Module):
    """MS2MNet's adaptive spatial attention fusion, ``forward(x_dec, x_en) -> fused`` at x_en's
    size, ``channels`` wide (both inputs).

    **Reconstructed**: the release (DrWuHonglin/MS2MNet ``models/MS2MNet.py``) calls
    ``ASAFFusion(channels)`` as ``fuse(x_decoder, x_encoder)`` in its HFP decoder but never
    defines it. Built from the README figure (images/ASAF.png):

        x_dec  <- bilinear resize to x_en's size (the decoder path is one stride coarser)
        att    =  x_en * sigmoid(conv_kxk([mean_c x_en, max_c x_en]))    spatial attention
        out    =  ReLU6(BN(conv1x1(BN(conv5x5(w * att + (1 - w) * x_dec)))))

    Choices the figure leaves open: the spatial-attention conv is 5x5 with bias, like the
    release's own spatial attention in MAF (``s_conv``); the mixing weight is one learnable
    scalar w = sigmoid(theta), theta = 0 at init (w = 0.5); the convs after the mix have no
    bias (BN follows)."""

    def __init__(self, channels: int, attention_kernel: int = 5, mix_kernel: int = 5):
        super().__init__()
        self.spatial_attention = SpatialAttention(attention_kernel)
        self.mix_logit = nn.Parameter(torch.zeros(1))
        self.post = nn.Sequential(
            nn.Conv2d(channels, channels, mix_kernel, padding=mix_kernel // 2, bias=False),
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU6(),
        )

    def forward(self, x_dec: torch.Tensor, x_en: torch.Tensor) -> torch.Tensor:
        if x_dec.shape[-2:] != x_en.shape[-2:]:
            x_dec = F.interpolate(x_dec, size=x_en.shape[-2:], mode="bilinear",
                                  align_corners=False)
        attended = x_en * self.spatial_attention(x_en)
        w = torch.sigmoid(self.mix_logit)
        return self.post(w * attended + (1 - w) * x_dec)


class ImageTextCorr(nn.Module):
    """ReMamber's local text features from the image-token cost volume (yyh-rain-song/ReMamber
    ``model/utils.py`` ``ImageTextCorr``); channels-last in and out: feat (B, H, W, C), tokens
    (B, T, D_t) -> (B, H, W, out_dim):

        cost[h, w, t] = GELU(Lin(C -> hidden) feat[h, w]) . GELU(Lin(D_t -> hidden) tok[t])
        out = Lin(hidden -> out_dim)(GELU(Conv3x3(T -> hidden)(cost)))   (T token channels)

    Padded tokens are not masked, as upstream."""

    def __init__(self, visual_dim: int, text_dim: int, hidden_dim: int, out_dim: int,
                 num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.vis_proj = nn.Sequential(nn.Linear(visual_dim, hidden_dim), nn.GELU())
        self.text_proj = nn.Sequential(nn.Linear(text_dim, hidden_dim), nn.GELU())
        self.cost_conv = nn.Sequential(nn.Conv2d(num_tokens, hidden_dim, 3, padding=1),
                                       nn.GELU())
        self.out_proj = nn.Linear(hidden_dim, out_dim)

    def forward(self, feat: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] != self.num_tokens:
            raise ValueError(f"ImageTextCorr was built for {self.num_tokens} tokens (one cost "
                             f"channel each) but got {tokens.shape[1]}; set the fusion's "
                             f"num_tokens to the dataset's token count")
        cost = torch.einsum("bhwc,btc->bthw", self.vis_proj(feat), self.text_proj(tokens))
        return self.out_proj(self.cost_conv(cost).permute(0, 2, 3, 1))
