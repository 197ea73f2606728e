"""VMamba encoder (MzeroMiko/VMamba; docs/models.md, "VMamba"), v0 and v2, on the kernels/ API.

Configurations (``VMAMBA_CONFIGS``, ``vmamba_config(name, **overrides)``):

    tiny / small / base        v0, the 2024-02 classification checkpoints Sigma starts from
                               (vssm_{tiny,small,base}_224.yaml): depths 2,2,9,2 / 2,2,27,2 /
                               2,2,27,2, dims 96 / 96 / 128, d_state 16, ssm_ratio 2, no MLP,
                               z gate, dwconv with bias, patch-embed v1 (conv 4x4 s4 + LN),
                               downsample v1 (2x2 patch merging: LN(4C) + Linear(4C -> 2C)).
    v2_tiny / v2_small / v2_base   v2 (vmambav2_{tiny,small,base}_224.yaml, forward "v05_noz"):
                               depths 2,2,5,2 / 2,2,15,2 / 2,2,15,2, dims 96 / 96 / 128,
                               d_state 1, ssm_ratio 2, MLP ratio 4, no z gate, dwconv without
                               bias, patch-embed v2 (conv3x3 s2 -> C/2, LN, GELU, conv3x3 s2 -> C,
                               LN), downsample v3 (conv3x3 s2 + LN).
    nano / micro, v2_nano / v2_micro   CPU-scale sizes of ours (v0- resp. v2-style blocks) for
                               suites that train on the CPU (dims 16 / 32; see the table).

Interface (``VMambaEncoder``, registered as encoder "vmamba"):

    enc = VMambaEncoder(in_chans=3, config="tiny", drop_path_rate=None, out_norms=True, **overrides)
    enc.out_channels                  per-stage channels, e.g. (96, 192, 384, 768)
    enc(x) -> [f0, f1, f2, f3]        channels-first (B, C_i, H/4/2^i, W/4/2^i), finest first;
                                      each stage's output before its downsampling, through the
                                      per-stage LayerNorm ``outnorm{i}`` (Sigma / upstream
                                      ``Backbone_VSSM``)
    Per-stage stepping, for models that insert modules between stages:
        x = enc.embed(x)                  (B, H/4, W/4, C0) channels-last tokens
        x = enc.run_stage(i, x)           the VSS blocks of stage i (channels-last)
        f = enc.stage_output(i, x)        outnorm{i}, channels-first feature
        x = enc.downsample(i, x)          to stage i+1 (identity after the last stage)

Parameter names are upstream's (``patch_embed.{0,2}`` / v2 ``patch_embed.{0,2,5,7}``,
``layers.{i}.blocks.{j}.{norm,op,norm2,mlp}``, ``layers.{i}.downsample.{reduction,norm}`` / v3
``layers.{i}.downsample.{1,3}``, ``outnorm{i}``), so the classification checkpoints' backbone
keys and Sigma's ``backbone.vssm.*`` keys load without renaming.

Initialisation as upstream ``VSSM._init_weights``: Linear weights trunc_normal(0.02) with zero
bias, LayerNorm (1, 0); convolutions keep PyTorch's default; SS2D's raw parameters as in ss2d.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.backbones.ss2d import SS2D, VSSBlock  # noqa: F401  (re-exported)
from models.layers import trunc_normal_init_
from models.registry import register_encoder


@dataclass(frozen=True)
class VMambaConfig:
    depths: tuple[int, ...]
    embed_dim: int
    d_state: int = 16
    ssm_ratio: float = 2.0
    mlp_ratio: float = 0.0
    version: str = "v0"            # VSS block version (ss2d.VSS_VERSIONS)
    patch_embed: str = "v1"        # v1: conv 4x4 s4 + LN; v2: two conv3x3 s2
    downsample: str = "v1"         # v1: patch merging; v3: conv3x3 s2 + LN
    drop_path_rate: float = 0.2
    dt_rank: int | str = "auto"
    d_conv: int = 3
    patch_size: int = 4
    notes: str = field(default="", compare=False)

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2 ** i for i in range(len(self.depths)))


_V0 = dict(version="v0", d_state=16, ssm_ratio=2.0, mlp_ratio=0.0, patch_embed="v1",
           downsample="v1")
_V2 = dict(version="v2", d_state=1, ssm_ratio=2.0, mlp_ratio=4.0, patch_embed="v2",
           downsample="v3")

VMAMBA_CONFIGS: dict[str, VMambaConfig] = {
    # v0: vssm_{tiny,small,base}_224.yaml (drop path 0.2 / 0.3 / 0.5; Sigma-B uses 0.6)
    "tiny": VMambaConfig((2, 2, 9, 2), 96, drop_path_rate=0.2, **_V0),
    "small": VMambaConfig((2, 2, 27, 2), 96, drop_path_rate=0.3, **_V0),
    "base": VMambaConfig((2, 2, 27, 2), 128, drop_path_rate=0.5, **_V0),
    # v2: vmambav2_{tiny,small,base}_224.yaml
    "v2_tiny": VMambaConfig((2, 2, 5, 2), 96, drop_path_rate=0.2, **_V2),
    "v2_small": VMambaConfig((2, 2, 15, 2), 96, drop_path_rate=0.3, **_V2),
    "v2_base": VMambaConfig((2, 2, 15, 2), 128, drop_path_rate=0.6, **_V2),
    # CPU-scale sizes of ours (not upstream): narrow, shallow, smaller state for v0
    "nano": VMambaConfig((1, 1, 2, 1), 16, drop_path_rate=0.0,
                         **{**_V0, "d_state": 4}, notes="CPU-scale, ours"),
    "micro": VMambaConfig((1, 1, 3, 1), 32, drop_path_rate=0.1,
                          **{**_V0, "d_state": 8}, notes="CPU-scale, ours"),
    "v2_nano": VMambaConfig((1, 1, 2, 1), 16, drop_path_rate=0.0, **_V2,
                            notes="CPU-scale, ours"),
    "v2_micro": VMambaConfig((1, 1, 3, 1), 32, drop_path_rate=0.1, **_V2,
                             notes="CPU-scale, ours"),
}


def vmamba_config(name: str | VMambaConfig, **overrides) -> VMambaConfig:
    """A named configuration, with fields replaced by ``overrides`` (e.g. ``depths=(1,1,1,1)``)."""
    if isinstance(name, VMambaConfig):
        cfg = name
    else:
        if name not in VMAMBA_CONFIGS:
            raise KeyError(f"unknown VMamba config {name!r}; known: {', '.join(VMAMBA_CONFIGS)}")
        cfg = VMAMBA_CONFIGS[name]
    if overrides:
        unknown = set(overrides) - set(VMambaConfig.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown VMamba config field(s) {sorted(unknown)}; known: "
                            f"{sorted(VMambaConfig.__dataclass_fields__)}")
        if "depths" in overrides:
            overrides["depths"] = tuple(overrides["depths"])
        cfg = replace(cfg, **overrides)
    return cfg


class Permute(nn.Module):
    """A parameter-free permute; keeps upstream's Sequential indices (and so its key names)."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


def make_patch_embed(kind: str, in_chans: int, dim: int, patch_size: int = 4) -> nn.Sequential:
    """(B, C_in, H, W) -> (B, H/4, W/4, dim) channels-last."""
    if kind == "v1":
        return nn.Sequential(nn.Conv2d(in_chans, dim, patch_size, stride=patch_size),
                             Permute(0, 2, 3, 1), nn.LayerNorm(dim))
    if kind == "v2":
        half = dim // 2
        stride = patch_size // 2
        return nn.Sequential(
            nn.Conv2d(in_chans, half, 3, stride=stride, padding=1), Permute(0, 2, 3, 1),
            nn.LayerNorm(half), Permute(0, 3, 1, 2), nn.GELU(),
            nn.Conv2d(half, dim, 3, stride=stride, padding=1), Permute(0, 2, 3, 1),
            nn.LayerNorm(dim),
        )
    raise ValueError(f"unknown patch_embed version {kind!r}; known: v1, v2")


class PatchMerging(nn.Module):
    """Downsample v1: concatenate each 2x2 neighbourhood (Swin order: (0,0), (1,0), (0,1),
    (1,1) as (row, col)) -> LN(4C) -> Linear(4C -> out, no bias); odd H or W padded with 0."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)
        return self.reduction(self.norm(x))


def make_downsample(kind: str, dim: int, out_dim: int) -> nn.Module:
    """Channels-last (B, H, W, dim) -> (B, H/2, W/2, out_dim)."""
    if kind == "v1":
        return PatchMerging(dim, out_dim)
    if kind == "v3":
        return nn.Sequential(Permute(0, 3, 1, 2), nn.Conv2d(dim, out_dim, 3, stride=2, padding=1),
                             Permute(0, 2, 3, 1), nn.LayerNorm(out_dim))
    raise ValueError(f"unknown downsample version {kind!r}; known: v1, v3")


class VSSLayer(nn.Module):
    """One stage: ``blocks`` then ``downsample`` (None after the last stage), upstream names."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.downsample = downsample


@register_encoder("vmamba")
class VMambaEncoder(nn.Module):
    """VMamba backbone with per-stage outputs (see module docstring for the interface)."""

    def __init__(self, in_chans: int = 3, config: str | VMambaConfig = "tiny",
                 drop_path_rate: float | None = None, out_norms: bool = True, **overrides):
        super().__init__()
        cfg = vmamba_config(config, **overrides)
        if drop_path_rate is not None:
            cfg = replace(cfg, drop_path_rate=drop_path_rate)
        self.config = cfg
        self.in_chans = in_chans
        dims = cfg.dims
        self.dims = dims
        self.out_channels = tuple(dims)
        self.num_stages = len(dims)
        self.patch_embed = make_patch_embed(cfg.patch_embed, in_chans, dims[0], cfg.patch_size)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        start = 0
        for i, depth in enumerate(cfg.depths):
            blocks = [
                VSSBlock(dims[i], drop_path=rates[start + j], d_state=cfg.d_state,
                         ssm_ratio=cfg.ssm_ratio, mlp_ratio=cfg.mlp_ratio, version=cfg.version,
                         dt_rank=cfg.dt_rank, d_conv=cfg.d_conv)
                for j in range(depth)
            ]
            start += depth
            down = (make_downsample(cfg.downsample, dims[i], dims[i + 1])
                    if i + 1 < self.num_stages else None)
            self.layers.append(VSSLayer(blocks, down))
        self.has_out_norms = out_norms
        if out_norms:
            for i, dim in enumerate(dims):
                self.add_module(f"outnorm{i}", nn.LayerNorm(dim))
        self.apply(trunc_normal_init_)  # upstream VSSM._init_weights

    # ------------------------------------------------------------------ per-stage stepping
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) image -> (B, H/4, W/4, C0) channels-last tokens."""
        return self.patch_embed(x)

    def run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.layers[i].blocks(x)

    def stage_output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage i's feature: ``outnorm{i}`` (identity without out norms), channels-first."""
        if self.has_out_norms:
            x = getattr(self, f"outnorm{i}")(x)
        return x.permute(0, 3, 1, 2).contiguous()

    def downsample(self, i: int, x: torch.Tensor) -> torch.Tensor:
        down = self.layers[i].downsample
        return x if down is None else down(x)

    # ------------------------------------------------------------------ whole passes
    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All stages and downsamplings; the last stage's channels-last tokens (classification)."""
        x = self.embed(x)
        for i in range(self.num_stages):
            x = self.downsample(i, self.run_stage(i, x))
        return x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed(x)
        outs = []
        for i in range(self.num_stages):
            x = self.run_stage(i, x)
            outs.append(self.stage_output(i, x))
            x = self.downsample(i, x)
        return outs
