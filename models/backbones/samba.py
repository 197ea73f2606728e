"""Samba's Mamba encoder (zhuqinfeng1999/Samba, ``mmseg/models/backbones/Samba.py``, class
``Samba``; docs/models.md, "Samba").

Four stages of pre-norm blocks over one raster-ordered token sequence (no 2-D cross-scan):

    stem        conv7x7 s2 (in -> 32) BN ReLU, 2 x [conv3x3 (32) BN ReLU], conv3x3 s2 (-> C1), LN
    downsample  conv3x3 s2 (C_{i-1} -> C_i), LN                       (stages 2-4)
    block       x + Mamba(LN x);  x + PVTv2-FFN(LN x)     FFN = fc -> dw3x3 -> GELU -> fc
    stage out   LN, reshaped to (B, C_i, H_i, W_i); the next stage reads the normalised map

Mamba is mamba_ssm's v1 block with d_state 64, d_conv 4, expand 2, dt_rank ceil(C/16)
(``models/backbones/mamba_block.py``). Parameter names are upstream's (``patch_embed{i}``,
``block{i}.{j}.attn.mamba``, ``norm{i}``), so an mmseg checkpoint's ``backbone.*`` loads as is.

Sizes (``SAMBA_SIZES``): ``base`` is the paper's configuration; ``micro`` and ``nano`` are
CPU-scale sizes of our own (narrow stages, one or two blocks, small d_state) for tests and
CPU suites.

Upstream details reproduced or left out, deliberately:
- ``token_label=True`` in the upstream config turns on MixToken in training: a Beta(1, 1) box,
  in units of 8 tokens, of the stem output is replaced by the same box of the batch-flipped
  sample, and **the labels are not mixed** (the segmentation target no longer matches the
  pasted region). Here ``mix_token`` is off by default; on, it does exactly that.
- Upstream runs ``self.apply(_init_weights)`` over every block, which re-initialises the
  Mamba ``dt_proj`` too (weight trunc-normal 0.02, bias 0, so softplus(dt) starts at 0.69
  everywhere) in spite of mamba_simple's ``_no_reinit`` flag. ``upstream_init=True`` does the
  same; the default keeps mamba_simple's dt initialisation.
- ``forward_tokens`` also builds a mean "class token" after stage 4 whose result is discarded;
  it is not computed here (448 channels on one token: no parameters, ~0 FLOPs).
- ``drop_path_rate`` is 0 in every upstream config; stochastic depth is not implemented.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn

from models.backbones.mamba_block import MambaMixer
from models.layers import ConvNormAct, trunc_normal_init_
from models.registry import register_encoder

#: per size: stage widths, blocks per stage, FFN ratios, SSM state size, stem width
SAMBA_SIZES: dict[str, dict] = {
    # the paper's configuration (configs/_base_/models/samba_upernet.py)
    "base": dict(embed_dims=(64, 128, 320, 448), depths=(3, 4, 6, 3), mlp_ratios=(8, 8, 4, 4),
                 d_state=64, stem_hidden_dim=32),
    # CPU-scale sizes (ours)
    "micro": dict(embed_dims=(32, 64, 96, 128), depths=(1, 1, 2, 1), mlp_ratios=(4, 4, 4, 4),
                  d_state=16, stem_hidden_dim=16),
    "nano": dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), mlp_ratios=(4, 4, 4, 4),
                 d_state=8, stem_hidden_dim=8),
}

MIX_TOKEN_UNIT = 8  # upstream ``pooling_scale``: the MixToken box is cut in units of 8 tokens


def tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) raster tokens -> (B, C, H, W)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)


class SambaStem(nn.Module):
    """Upstream ``Stem``: three conv-BN-ReLU (7x7 s2, 3x3, 3x3), a 3x3 s2 projection, LN."""

    def __init__(self, in_chans: int, hidden_dim: int, out_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, k, s in [(in_chans, 7, 2), (hidden_dim, 3, 1), (hidden_dim, 3, 1)]:
            # spliced into one Sequential: upstream's keys are ``conv.0`` .. ``conv.8``
            layers += ConvNormAct(c_in, hidden_dim, k, s,
                                  act=functools.partial(nn.ReLU, inplace=True))
        self.conv = nn.Sequential(*layers)
        self.proj = nn.Conv2d(hidden_dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(self.conv(x))
        _, _, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class SambaDownsample(nn.Module):
    """Upstream ``DownSamples``: conv3x3 s2 with bias, then LN over the tokens."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class DepthwiseConvTokens(nn.Module):
    """PVTv2's ``DWConv``: a 3x3 depthwise conv applied to tokens laid back on the grid."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=True)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.dwconv(tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)


class PVT2FFN(nn.Module):
    """PVTv2 feed-forward: fc -> dw3x3 -> GELU -> fc (upstream ``PVT2FFN``)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DepthwiseConvTokens(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class NormMamba(nn.Module):
    """Upstream ``MambaLayer``: LN then the Mamba mixer (the residual is added by the block)."""

    def __init__(self, dim: int, d_state: int, d_conv: int = 4, expand: int = 2):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mamba = MambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mamba(self.norm(x))


class SambaBlock(nn.Module):
    """Upstream ``Block_mamba``: x + Mamba(LN x), then x + FFN(LN x)."""

    def __init__(self, dim: int, mlp_ratio: float, d_state: int):
        super().__init__()
        self.attn = NormMamba(dim, d_state)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = PVT2FFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(self.norm2(x), h, w)


@register_encoder("samba")
class SambaEncoder(nn.Module):
    """Samba's backbone; ``forward(x) -> [C1@H/4, C2@H/8, C3@H/16, C4@H/32]``.

    ``size`` picks a preset of ``SAMBA_SIZES``; keyword arguments override its fields."""

    def __init__(self, in_chans: int = 3, size: str = "base", embed_dims=None, depths=None,
                 mlp_ratios=None, d_state: int | None = None, stem_hidden_dim: int | None = None,
                 mix_token: bool = False, mix_token_beta: float = 1.0,
                 upstream_init: bool = False):
        super().__init__()
        if size not in SAMBA_SIZES:
            raise ValueError(f"unknown Samba size {size!r}; known: {', '.join(SAMBA_SIZES)}")
        cfg = dict(SAMBA_SIZES[size])
        for key, value in dict(embed_dims=embed_dims, depths=depths, mlp_ratios=mlp_ratios,
                               d_state=d_state, stem_hidden_dim=stem_hidden_dim).items():
            if value is not None:
                cfg[key] = value
        dims = list(cfg["embed_dims"])
        if not (len(dims) == len(cfg["depths"]) == len(cfg["mlp_ratios"])):
            raise ValueError(f"Samba: embed_dims, depths and mlp_ratios need one entry per stage; "
                             f"got {cfg['embed_dims']}, {cfg['depths']}, {cfg['mlp_ratios']}")
        self.in_chans = in_chans
        self.out_channels = dims
        self.num_stages = len(dims)
        self.mix_token = mix_token
        self.mix_token_beta = mix_token_beta
        #: the last MixToken box in token units (row0, row1, col0, col1), for inspection
        self.last_mix_box: tuple[int, int, int, int] | None = None

        for i in range(self.num_stages):
            embed = (SambaStem(in_chans, cfg["stem_hidden_dim"], dims[0]) if i == 0
                     else SambaDownsample(dims[i - 1], dims[i]))
            blocks = nn.ModuleList(SambaBlock(dims[i], cfg["mlp_ratios"][i], cfg["d_state"])
                                   for _ in range(cfg["depths"][i]))
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i]))
        # upstream ``_init_weights`` (PVTv2's), convs included; without ``upstream_init`` Mamba's
        # dt_proj keeps mamba_simple's initialisation (module docstring)
        self.apply(functools.partial(trunc_normal_init_, conv_fan_out=True,
                                     keep_no_reinit=not upstream_init))

    def mix_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Upstream MixToken on the stem output x (B, H, W, C): a box drawn as in ``rand_bbox``
        (area fraction 1 - lam, lam ~ Beta(beta, beta), centre uniform, clipped), in units of
        8 tokens, is taken from the batch-flipped sample. Labels are not mixed (upstream)."""
        rows, cols = x.shape[1] // MIX_TOKEN_UNIT, x.shape[2] // MIX_TOKEN_UNIT
        if rows == 0 or cols == 0:
            self.last_mix_box = None
            return x
        lam = torch.distributions.Beta(self.mix_token_beta, self.mix_token_beta).sample().item()
        cut = math.sqrt(1.0 - lam)
        cut_r, cut_c = int(rows * cut), int(cols * cut)
        cr, cc = torch.randint(rows, ()).item(), torch.randint(cols, ()).item()
        r0, r1 = min(max(cr - cut_r // 2, 0), rows), min(max(cr + cut_r // 2, 0), rows)
        c0, c1 = min(max(cc - cut_c // 2, 0), cols), min(max(cc + cut_c // 2, 0), cols)
        self.last_mix_box = (r0, r1, c0, c1)
        u = MIX_TOKEN_UNIT
        mixed = x.clone()
        mixed[:, u * r0:u * r1, u * c0:u * c1] = x.flip(0)[:, u * r0:u * r1, u * c0:u * c1]
        return mixed

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(self.num_stages):
            tokens, h, w = getattr(self, f"patch_embed{i + 1}")(x)
            if i == 0 and self.mix_token and self.training:
                grid = self.mix_tokens(tokens.view(tokens.shape[0], h, w, -1))
                tokens = grid.reshape(tokens.shape)
            for block in getattr(self, f"block{i + 1}"):
                tokens = block(tokens, h, w)
            x = tokens_to_map(getattr(self, f"norm{i + 1}")(tokens), h, w).contiguous()
            outs.append(x)
        return outs
