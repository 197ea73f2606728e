"""VMamba's 2-D scan orders as single autograd nodes (pure data movement: 0 FLOPs).

cross_scan maps a feature map (B, C, H, W) to K sequences (B, K, C, H*W); cross_merge maps K
sequences back to (B, C, H*W) by un-permuting each and summing. Each is the other's backward
(VMamba ``CrossScanF`` / ``CrossMergeF``, csm_triton.py, scans=0).

Modes:
    cross4  K=4: row-major, column-major (flatten of the H<->W transpose), and both reversed
            (VMamba SS2D v0/v2).
    bidir   K=2: row-major and its reversal (Sigma's ConMB scans a sequence both ways).
    unidir  K=1: row-major only (Sigma's CroMB, Samba's single raster scan).
"""
from __future__ import annotations

import torch

SCAN_MODES = {"cross4": 4, "bidir": 2, "unidir": 1}


def _check_mode(mode: str) -> int:
    try:
        return SCAN_MODES[mode]
    except KeyError:
        raise ValueError(f"unknown scan mode {mode!r}; known: {', '.join(SCAN_MODES)}") from None


def _scan(x: torch.Tensor, mode: str) -> torch.Tensor:
    b, c, h, w = x.shape
    row = x.flatten(2)
    if mode == "unidir":
        return row.unsqueeze(1).contiguous()
    if mode == "bidir":
        return torch.stack([row, row.flip(-1)], dim=1)
    col = x.transpose(2, 3).flatten(2)
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)


def _merge(y: torch.Tensor, h: int, w: int, mode: str) -> torch.Tensor:
    b, k, c, length = y.shape
    if mode == "unidir":
        return y[:, 0].contiguous()
    if mode == "bidir":
        return y[:, 0] + y[:, 1].flip(-1)
    row = y[:, 0] + y[:, 2].flip(-1)
    col = y[:, 1] + y[:, 3].flip(-1)
    return row + col.view(b, c, w, h).transpose(2, 3).reshape(b, c, length)


class CrossScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mode):
        ctx.shape = x.shape[-2:]
        ctx.mode = mode
        return _scan(x, mode)

    @staticmethod
    def backward(ctx, dy):
        h, w = ctx.shape
        b, _, c, _ = dy.shape
        return _merge(dy, h, w, ctx.mode).view(b, c, h, w), None


class CrossMergeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, h, w, mode):
        ctx.shape = (h, w)
        ctx.mode = mode
        return _merge(y, h, w, mode)

    @staticmethod
    def backward(ctx, dx):
        h, w = ctx.shape
        b, c, _ = dx.shape
        return _scan(dx.view(b, c, h, w), ctx.mode), None, None, None


def cross_scan(x: torch.Tensor, mode: str = "cross4") -> torch.Tensor:
    """(B, C, H, W) -> (B, K, C, H*W) in the scan orders of ``mode``."""
    _check_mode(mode)
    if x.dim() != 4:
        raise ValueError(f"cross_scan expects (B, C, H, W), got shape {tuple(x.shape)}")
    return CrossScanFn.apply(x, mode)


def cross_merge(y: torch.Tensor, h: int, w: int, mode: str = "cross4") -> torch.Tensor:
    """(B, K, C, H*W) -> (B, C, H*W): undo each scan order and sum over the K sequences."""
    k = _check_mode(mode)
    if y.dim() != 4 or y.shape[1] != k or y.shape[-1] != h * w:
        raise ValueError(
            f"cross_merge({mode}) expects (B, {k}, C, {h}*{w}), got shape {tuple(y.shape)}"
        )
    return CrossMergeFn.apply(y, int(h), int(w), mode)
