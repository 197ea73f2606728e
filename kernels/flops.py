"""Analytic FLOP and byte formulas for the ops in kernels/, and their fvcore handles.

Conventions (fvcore counts one multiply-add as one FLOP, so every number here is in MACs):
    full       the scan counts 9*B*L*D*N + B*D*L (+ B*D*L with z): Albert Gu's formula from
               state-spaces/mamba#110, as VMamba's ``flops_selective_scan_fn`` (csms6s.py).
    published  the scan is skipped, as in the seed repositories' ``flops()`` (Sigma's autograd
               functions are not in VMamba's handle table, so fvcore never counts them).
    ref        the scan counts as VMamba's older ``flops_selective_scan_ref`` (csms6s.py): numpy
               ``einsum_path`` MAC counts of the reference loop, 3.5*B*L*D*N + B*D*L (3.5625
               BLDN at N = 16), behind VMamba's early published FLOPs (4.46G for VMamba-T). Only
               the model-zoo report uses it; profiles take ``CONVENTIONS``.
Cross-scan / cross-merge are data movement (0) in every convention; the causal conv counts as a
depthwise conv (B*D*L*W).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

#: the traced names of the autograd nodes in kernels/
SCAN_OP = "prim::PythonOp.SelectiveScanFn"
CROSS_SCAN_OP = "prim::PythonOp.CrossScanFn"
CROSS_MERGE_OP = "prim::PythonOp.CrossMergeFn"
CONV1D_OP = "prim::PythonOp.CausalConv1dFn"

#: the conventions a profile reports
CONVENTIONS = ("published", "full")
#: every convention ``fvcore_handles`` knows
ALL_CONVENTIONS = CONVENTIONS + ("ref",)


def selective_scan_flops(B: int, L: int, D: int, N: int, with_D: bool = True,
                         with_z: bool = False) -> int:
    """MACs of one selective scan: 9*B*L*D*N (+ B*D*L for D) (+ B*D*L for z)."""
    flops = 9 * B * L * D * N
    if with_D:
        flops += B * D * L
    if with_z:
        flops += B * D * L
    return flops


@functools.lru_cache(maxsize=None)
def _einsum_macs(equation: str, *shapes: tuple[int, ...]) -> float:
    """numpy's optimal-path FLOP count halved and floored (fvcore's / VMamba's MAC convention)."""
    arrays = [np.broadcast_to(np.zeros(()), s) for s in shapes]  # shapes only, no memory
    report = np.einsum_path(equation, *arrays, optimize="optimal")[1]
    for line in report.split("\n"):
        if "optimized flop" in line.lower():
            return float(np.floor(float(line.split(":")[-1]) / 2))
    raise RuntimeError(f"numpy.einsum_path gave no FLOP count for {equation}")


def selective_scan_flops_ref(B: int, L: int, D: int, N: int, with_D: bool = True,
                             with_z: bool = False) -> float:
    """VMamba's ``flops_selective_scan_ref`` (grouped B / C): the MACs of the reference loop's
    einsums (deltaA, deltaB_u, and per step the state update plus the C read-out) + B·D·L for
    D (+ B·D·L for z)."""
    flops = _einsum_macs("bdl,dn->bdln", (B, D, L), (D, N))
    flops += _einsum_macs("bdl,bnl,bdl->bdln", (B, D, L), (B, N, L), (B, D, L))
    flops += L * (B * D * N + _einsum_macs("bdn,bdn->bd", (B, D, N), (B, D, N)))
    flops += B * D * L * (int(with_D) + int(with_z))
    return flops


def selective_scan_bytes(B: int, L: int, D: int, N: int, G: int = 1, with_D: bool = True,
                         with_z: bool = False, with_bias: bool = False,
                         itemsize: int = 4) -> int:
    """Minimal bytes a forward must move: read u, delta (and z), B and C, A (D and bias); write
    the output. ``G`` groups of B/C rows are read once each."""
    elems = 3 * B * D * L + 2 * B * G * N * L + D * N
    elems += B * D * L if with_z else 0
    elems += D if with_D else 0
    elems += D if with_bias else 0
    return elems * itemsize


def causal_conv1d_flops(B: int, D: int, L: int, W: int) -> int:
    return B * D * L * W


# ----------------------------------------------------------------------------- fvcore handles


def _sizes(value) -> list[int]:
    return list(value.type().sizes())


def _present(value) -> bool:
    """Optional inputs are traced as empty tensors when absent (see selective_scan.py)."""
    sizes = _sizes(value)
    return not (len(sizes) == 1 and sizes[0] == 0)


def scan_shape_from_inputs(inputs) -> dict[str, Any]:
    """B, D, L, N and which optional tensors are present, from the traced node's inputs
    ``[u, delta, A, B, C, D, z, delta_bias]``."""
    b, d, length = _sizes(inputs[0])
    n = _sizes(inputs[2])[1]
    return dict(B=b, D=d, L=length, N=n, with_D=_present(inputs[5]), with_z=_present(inputs[6]))


def scan_flop_handle_full(inputs, outputs) -> int:
    s = scan_shape_from_inputs(inputs)
    return selective_scan_flops(s["B"], s["L"], s["D"], s["N"], s["with_D"], s["with_z"])


def scan_flop_handle_ref(inputs, outputs) -> float:
    s = scan_shape_from_inputs(inputs)
    return selective_scan_flops_ref(s["B"], s["L"], s["D"], s["N"], s["with_D"], s["with_z"])


def zero_handle(inputs, outputs) -> int:
    return 0


def conv1d_flop_handle(inputs, outputs) -> int:
    b, d, length = _sizes(inputs[0])
    return causal_conv1d_flops(b, d, length, _sizes(inputs[1])[-1])


def fvcore_handles(convention: str = "full") -> dict[str, Callable | None]:
    """Op handles for ``FlopCountAnalysis.set_op_handle(**handles)`` in one convention."""
    if convention not in ALL_CONVENTIONS:
        raise ValueError(f"unknown FLOP convention {convention!r}; known: {ALL_CONVENTIONS}")
    handles: dict[str, Callable | None] = {
        CROSS_SCAN_OP: zero_handle,
        CROSS_MERGE_OP: zero_handle,
        CONV1D_OP: conv1d_flop_handle,
    }
    handles[SCAN_OP] = {"full": scan_flop_handle_full,
                        "ref": scan_flop_handle_ref}.get(convention, zero_handle)
    return handles
