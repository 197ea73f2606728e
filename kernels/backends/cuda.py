"""``cuda`` backend: mamba_ssm's fused CUDA kernel (``selective_scan_fn``) for GPU tensors.

Available when a GPU is present and ``mamba_ssm.ops.selective_scan_interface`` imports with its
compiled ``selective_scan_cuda`` extension (a CPU-only install of mamba_ssm lacks it). The
import is attempted once, lazily, so ``import kernels`` stays cheap. mamba_ssm's kernel takes
fp32/fp16/bf16 u and fp32 A, D, delta_bias; float64 scans run on the ``torch`` backend instead.
The backward re-runs mamba_ssm's own autograd function (its fused backward kernel).
"""
from __future__ import annotations

import logging

import torch

from kernels.selective_scan import ScanBackend, get_backend, register_backend

log = logging.getLogger(__name__)

_IMPORT: dict[str, object] = {}


def mamba_selective_scan_fn():
    """mamba_ssm's ``selective_scan_fn``, or raise ImportError with the reason."""
    if "fn" not in _IMPORT and "error" not in _IMPORT:
        try:
            import selective_scan_cuda
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            if not hasattr(selective_scan_cuda, "fwd"):
                raise ImportError("selective_scan_cuda has no compiled kernels (a stand-in)")
            _IMPORT["fn"] = selective_scan_fn
        except Exception as exc:  # noqa: BLE001 - any import failure means "unavailable"
            _IMPORT["error"] = ("mamba_ssm CUDA kernel does not import "
                                f"({type(exc).__name__}: {exc})")
    if "error" in _IMPORT:
        raise ImportError(_IMPORT["error"])
    return _IMPORT["fn"]


class MambaCudaBackend(ScanBackend):
    name = "cuda"
    devices = ("cuda",)
    priority = 30

    def available(self) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            return False, "no CUDA device"
        try:
            mamba_selective_scan_fn()
        except ImportError as exc:
            return False, str(exc)
        return True, ""

    def forward(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        if u.dtype == torch.float64:
            return get_backend("torch").forward(u, delta, A, B, C, D, z, delta_bias,
                                                delta_softplus)
        fn = mamba_selective_scan_fn()

        def f32(t):
            return None if t is None else t.float().contiguous()

        out, last = fn(u.contiguous(), delta.to(u.dtype).contiguous(), f32(A),
                       B.to(u.dtype).contiguous(), C.to(u.dtype).contiguous(), f32(D),
                       None if z is None else z.to(u.dtype).contiguous(), f32(delta_bias),
                       delta_softplus, True)
        return out, last

    def backward(self, saved, dout, delta_softplus, extras=()):
        if saved[0].dtype == torch.float64:
            return get_backend("torch").backward(saved, dout, delta_softplus)
        return super().backward(saved, dout, delta_softplus, extras)


register_backend(MambaCudaBackend())
