"""ReMamber's image-text fusion (ECCV 2024, arXiv 2403.17839; yyh-rain-song/ReMamber
``model/customized_model.py`` ``Twister``/``VSSBlock``/``ReMamber.forward``, ``model/utils.py``
``ImageTextCorr``; docs/models.md, "ReMamber"), as a stage fusion.

Per stage i (channels C = C_i), after the stage's VSS blocks:

    g = ReLU(Linear(D_t -> C)(pooled text))                 global text, broadcast to H x W
    l = ImageTextCorr(F, text tokens)                      local text:
          cost[h, w, t] = GELU(Lin(C -> 512) F[h, w]) . GELU(Lin(D_t -> 512) tok[t])
          l = Lin(512 -> C)(GELU(Conv3x3(T -> 512)(cost)))  (T = 20 token channels)
    (F, g, l) <- TwisterBlock(F, g, l), twice              no MLP
    output F: the stage's feature and the input of the next downsampling

TwisterBlock (upstream ``VSSBlock(forward_coremm="Twister")``), with one LayerNorm shared by the
three inputs, as upstream's ``ln_1``:

    n = [LN F, LN g, LN l];  X = cat(n)                    (B, 3C, H, W) "cube"
    channel scan: X += up(SS1D(down16(X)))                 X resized to 16 x 16 (bilinear), read
          as a sequence of 3C channel positions with 256 features, scanned forwards and
          backwards (SS2D d_model 256 with its z gate, 4 parameter sets: upstream "v052d"; on the
          1 x 3C map our cross4 scan is exactly two forward and two backward scans), resized back
    spatial scan: Y = SS2D(X) with in_proj Linear(3C -> 2C), no z gate, 4-direction scan
    F <- F + Y;  g <- g + LN g;  l <- l + LN l             upstream adds the *normalised*
          conditions back (its Twister returns them as they came in), reproduced here

The paper's settings: d_state 1, ssm_ratio 2, dwconv without bias (ReMamber's VMamba-v2 config
``SSM_CONV_BIAS False``), channel-scan resolution 16, hidden 512, 2 blocks per stage, no drop
path. Upstream ImageTextCorr does not mask padded tokens; neither do we. The new modules keep
PyTorch's default initialisation, as upstream (they are built after ``VSSM._init_weights`` ran).

``twister`` pairs the image with text (``feat_b`` is ``models.text_encoder.TextFeatures``).
``twister_x`` is our ablation for two image streams: the auxiliary stage feature is pooled to a
grid of ``grid`` tokens (4 x 5 = 20 by default, ReMamber's token count) and to one global vector,
which take the places of the text tokens and the pooled text; it works with any encoder in a
``FusionSegmenter`` (dualcnn, vmamba, ...). Its defaults are CPU-friendly (hidden 64, channel-scan
resolution 8).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.backbones.ss2d import SS2D
from models.fusion.base import FusionModule
from models.layers import DropPath, ImageTextCorr
from models.registry import register_fusion
from models.text_encoder import TextFeatures


class ChannelScan(nn.Module):
    """Twister's channel scan: cube (B, 3C, H, W) -> the increment added to it."""

    def __init__(self, resolution: int = 16, d_state: int = 1, ssm_ratio: float = 2.0,
                 conv_bias: bool = False):
        super().__init__()
        self.resolution = resolution
        self.ss1d = SS2D(resolution * resolution, d_state=d_state, ssm_ratio=ssm_ratio,
                         conv_bias=conv_bias, use_z_gate=True, scan_mode="cross4")

    def forward(self, cube: torch.Tensor) -> torch.Tensor:
        b, c3, h, w = cube.shape
        r = self.resolution
        small = F.interpolate(cube, size=(r, r), mode="bilinear", align_corners=False)
        seq = small.flatten(2).unsqueeze(1)                 # (B, 1, 3C, r*r): a 1 x 3C map
        mixed = self.ss1d(seq).squeeze(1).view(b, c3, r, r)
        return F.interpolate(mixed, size=(h, w), mode="bilinear", align_corners=False)


class TwisterBlock(nn.Module):
    """One Mamba Twister block on channels-last (F, g, l), each (B, H, W, C)."""

    def __init__(self, dim: int, channel_res: int = 16, d_state: int = 1,
                 ssm_ratio: float = 2.0, conv_bias: bool = False, drop_path: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.channel_scan = ChannelScan(channel_res, d_state, ssm_ratio, conv_bias)
        self.spatial = SS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio, conv_bias=conv_bias,
                            use_z_gate=False, scan_mode="cross4")
        # upstream swaps in_proj for Linear2d(3C -> inner): the scan reads the whole cube
        self.spatial.in_proj = nn.Linear(3 * dim, self.spatial.d_inner, bias=False)
        self.drop_path = DropPath(drop_path)

    def forward(self, feat, global_text, local_text):
        normed = [self.norm(t) for t in (feat, global_text, local_text)]
        cube = torch.cat(normed, dim=-1).permute(0, 3, 1, 2)          # (B, 3C, H, W)
        cube = cube + self.channel_scan(cube)
        out = self.spatial(cube.permute(0, 2, 3, 1))
        return (feat + self.drop_path(out), global_text + self.drop_path(normed[1]),
                local_text + self.drop_path(normed[2]))


class TwisterFusion(FusionModule):
    """ImageTextCorr + ``depth`` Twister blocks per stage, for per-stage token widths
    ``token_dims`` (the text width for ``twister``, the stage width for ``twister_x``)."""

    kind = "stage"

    def __init__(self, channels: list[int], token_dims: list[int], num_tokens: int,
                 hidden_dim: int, depth: int, channel_res: int, d_state: int, ssm_ratio: float,
                 conv_bias: bool, drop_path: float):
        super().__init__(channels)
        self.num_tokens = num_tokens
        self.global_text = nn.ModuleList(
            nn.Sequential(nn.Linear(d, c), nn.ReLU()) for c, d in zip(channels, token_dims))
        self.local_text = nn.ModuleList(
            ImageTextCorr(c, d, hidden_dim, c, num_tokens) for c, d in zip(channels, token_dims))
        self.blocks = nn.ModuleList(
            nn.ModuleList(TwisterBlock(c, channel_res, d_state, ssm_ratio, conv_bias, drop_path)
                          for _ in range(depth))
            for c in channels)

    def fuse(self, stage_index: int, feat: torch.Tensor, tokens: torch.Tensor,
             pooled: torch.Tensor) -> torch.Tensor:
        """feat (B, C, H, W), tokens (B, T, D), pooled (B, D) -> fused (B, C, H, W)."""
        x = feat.permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        g = self.global_text[stage_index](pooled)[:, None, None, :].expand(b, h, w, c)
        l_text = self.local_text[stage_index](x, tokens)
        for block in self.blocks[stage_index]:
            x, g, l_text = block(x, g, l_text)
        return x.permute(0, 3, 1, 2).contiguous()


@register_fusion("twister")
class Twister(TwisterFusion):
    pairs_with = "text"
    summary = "ReMamber: global + local (ImageTextCorr) text, Mamba Twister channel/spatial scans"

    def __init__(self, channels: list[int], text_dim: int = 768, num_tokens: int = 20,
                 hidden_dim: int = 512, depth: int = 2, channel_res: int = 16, d_state: int = 1,
                 ssm_ratio: float = 2.0, conv_bias: bool = False, drop_path: float = 0.0):
        super().__init__(channels, [text_dim] * len(channels), num_tokens, hidden_dim, depth,
                         channel_res, d_state, ssm_ratio, conv_bias, drop_path)

    def forward(self, stage_index: int, feat_a: torch.Tensor, feat_b) -> torch.Tensor:
        if not isinstance(feat_b, TextFeatures):
            raise TypeError("fusion 'twister' pairs an image with text (ReMamber); for two "
                            "image streams use 'twister_x'")
        return self.fuse(stage_index, feat_a, feat_b.tokens, feat_b.pooled)


@register_fusion("twister_x")
class TwisterX(TwisterFusion):
    pairs_with = "image"
    summary = "ablation: Mamba Twister with X pooled to tokens (4x5 grid) + a global X vector"

    def __init__(self, channels: list[int], grid: tuple[int, int] = (4, 5), hidden_dim: int = 64,
                 depth: int = 2, channel_res: int = 8, d_state: int = 1, ssm_ratio: float = 2.0,
                 conv_bias: bool = False, drop_path: float = 0.0):
        rows, cols = int(grid[0]), int(grid[1])
        super().__init__(channels, list(channels), rows * cols, hidden_dim, depth, channel_res,
                         d_state, ssm_ratio, conv_bias, drop_path)
        self.grid = (rows, cols)

    def forward(self, stage_index: int, feat_a: torch.Tensor, feat_b: torch.Tensor):
        tokens = F.adaptive_avg_pool2d(feat_b, self.grid).flatten(2).transpose(1, 2)
        pooled = feat_b.mean(dim=(2, 3))
        return self.fuse(stage_index, feat_a, tokens, pooled)
