"""Causal depthwise conv1d (Mamba's short conv) as one autograd node.

Semantics of causal-conv1d's ``causal_conv1d_fn(x, weight, bias, activation)``: x (B, D, L),
weight (D, W), bias (D,); out[t] = sum_k weight[:, k] * x[t - (W-1) + k], zero history; then
SiLU when activation is "silu"/"swish". Its ``causal_conv1d_ref`` computes the same as
``F.conv1d(x, w[:, None], bias, padding=W-1, groups=D)[..., :L]``. On a GPU with causal-conv1d's
compiled kernel installed, the forward runs that kernel (the backward stays the reference's).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_EMPTY = torch.empty(0)


_CUDA_KERNEL: dict[str, object] = {}


def cuda_kernel():
    """causal-conv1d's ``causal_conv1d_fn`` when its compiled extension imports, else None."""
    if "fn" not in _CUDA_KERNEL:
        try:
            import causal_conv1d_cuda
            from causal_conv1d import causal_conv1d_fn

            _CUDA_KERNEL["fn"] = causal_conv1d_fn if hasattr(causal_conv1d_cuda,
                                                             "causal_conv1d_fwd") else None
        except Exception:  # noqa: BLE001 - not installed, or a CPU-only install
            _CUDA_KERNEL["fn"] = None
    return _CUDA_KERNEL["fn"]


def causal_conv1d_reference(x, weight, bias=None, activation=None):
    width = weight.shape[-1]
    out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=x.shape[1])
    out = out[..., : x.shape[-1]]
    return F.silu(out) if activation in ("silu", "swish") else out


class CausalConv1dFn(torch.autograd.Function):
    """One traced node ``prim::PythonOp.CausalConv1dFn``; inputs [x, weight, bias|empty]."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        b = None if bias.numel() == 0 else bias
        ctx.activation = activation
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, weight, bias)
        # the backward replays the reference under the same autocast state, so that a bf16 / fp16
        # forward (AMP) differentiates the same casts instead of mixing dtypes
        device_type = x.device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type),
                        torch.get_autocast_dtype(device_type))
        kernel = cuda_kernel() if x.is_cuda else None
        if kernel is not None and x.dtype in (torch.float32, torch.float16, torch.bfloat16):
            return kernel(x.contiguous(), weight.contiguous(), b, activation=activation)
        return causal_conv1d_reference(x, weight, b, activation)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        device_type, enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
            xs = x.detach().requires_grad_(True)
            ws = weight.detach().requires_grad_(True)
            bs = bias.detach().requires_grad_(True) if ctx.has_bias else None
            out = causal_conv1d_reference(xs, ws, bs, ctx.activation)
            wrt = [xs, ws] + ([bs] if bs is not None else [])
            grads = torch.autograd.grad(out, wrt, dout)
        dbias = grads[2] if ctx.has_bias else None
        return grads[0], grads[1], dbias, None


def causal_conv1d(x, weight, bias=None, activation=None):
    """Causal depthwise conv over the last axis of x (B, D, L) with weight (D, W)."""
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(
            f"causal_conv1d expects x (B, D, L) and weight (D, W); got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    return CausalConv1dFn.apply(x, weight, x.new_empty(0) if bias is None else bias, activation)
