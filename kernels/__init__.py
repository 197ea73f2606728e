"""Scan and conv kernels for Mamba models: no model code, no harness code.

Public surface (mamba_ssm-compatible semantics):
    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                   delta_softplus=False, return_last_state=False, backend="auto")
    cross_scan(x, mode) / cross_merge(y, H, W, mode)      VMamba's 2-D scan orders
    causal_conv1d(x, weight, bias=None, activation=None)   Mamba's depthwise causal conv
    flops: analytic FLOP / byte formulas and fvcore handles for every op here.
"""
from kernels import flops
from kernels.conv1d import CausalConv1dFn, causal_conv1d
from kernels.cross_scan import SCAN_MODES, CrossMergeFn, CrossScanFn, cross_merge, cross_scan
from kernels.selective_scan import (
    ScanBackend,
    SelectiveScanFn,
    available_backends,
    get_backend,
    list_backends,
    register_backend,
    resolve_backend,
    scan_backend,
    selective_scan,
)

__all__ = [
    "selective_scan", "register_backend", "get_backend", "list_backends", "available_backends",
    "resolve_backend", "scan_backend", "ScanBackend", "SelectiveScanFn",
    "cross_scan", "cross_merge", "CrossScanFn", "CrossMergeFn", "SCAN_MODES",
    "causal_conv1d", "CausalConv1dFn", "flops",
]
