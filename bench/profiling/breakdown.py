"""Where the time goes: torch.profiler shares of a forward (and a training step) per category.

Categories: the selective scan (``SelectiveScanFn`` and its backward node), VMamba's cross-scan /
cross-merge (``CrossScanFn`` / ``CrossMergeFn``), convolutions (aten convolutions, their
backward, the causal conv1d node) and the rest. Autograd functions appear in the profiler under
their class names (``Function.apply`` records them) and their backward under
``<Name>Backward``, so no label has to be added to the model.

Every profiled op's *self* time is given to the category of its nearest enclosing op that has
one (an aten::mul inside the scan is scan time; a conv inside nothing is conv time); the shares
of one call therefore sum to 1. On a GPU the self *device* time of each op's kernels is used,
on the CPU the self CPU time (mamba#284 measured the scan's share of CUDA time this way).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

CATEGORIES = ("scan", "cross_scan_merge", "conv", "other")

_SCAN_NAMES = ("SelectiveScanFn",)
_CROSS_NAMES = ("CrossScanFn", "CrossMergeFn")
_CONV_NAMES = ("CausalConv1dFn", "ConvolutionBackward", "aten::conv", "aten::_convolution",
               "aten::convolution", "aten::mkldnn_convolution", "aten::cudnn_convolution",
               "aten::thnn_conv", "aten::slow_conv", "aten::_slow_conv", "aten::_nnpack",
               "aten::miopen_convolution")
_ENGINE_PREFIX = "autograd::engine::evaluate_function: "


def categorise(name: str) -> str | None:
    """The category of one profiler event name, or None when it has none of its own."""
    if name.startswith(_ENGINE_PREFIX):
        name = name[len(_ENGINE_PREFIX):]
    if name.startswith(_SCAN_NAMES):
        return "scan"
    if name.startswith(_CROSS_NAMES):
        return "cross_scan_merge"
    if name.startswith(_CONV_NAMES):
        return "conv"
    return None


def _self_time_us(event, use_device: bool) -> float:
    if use_device:
        return float(getattr(event, "self_device_time_total", 0.0) or 0.0)
    return float(event.self_cpu_time_total)


def shares_from_events(events, use_device: bool = False) -> dict[str, Any]:
    """Per-category time (ms) and share of the total from a profiler's ``events()``."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    cache: dict[int, str] = {}
    for event in events:
        if getattr(event, "is_async", False):
            continue
        if use_device and str(getattr(event, "device_type", "CPU")).split(".")[-1] != "CPU":
            continue  # a kernel: its time is already in the CPU op that launched it
        chain, node, category = [], event, None
        while node is not None:
            key = id(node)
            if key in cache:
                category = cache[key]
                break
            chain.append(key)
            category = categorise(node.name)
            if category is not None:
                break
            node = node.cpu_parent
        category = category or "other"
        for key in chain:
            cache.setdefault(key, category)
        totals[category] += _self_time_us(event, use_device)
    total = sum(totals.values())
    out: dict[str, Any] = {"total_ms": total / 1e3}
    for name, value in totals.items():
        out[f"{name}_ms"] = value / 1e3
        out[f"{name}_share"] = value / total if total else 0.0
    return out


def time_breakdown(fn: Callable[[], Any], device: torch.device, repeats: int = 1,
                   warmup: int = 1) -> dict[str, Any]:
    """Profile ``repeats`` calls of ``fn`` (after ``warmup`` unprofiled ones) and return the
    category shares of their summed time."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    activities = [ProfilerActivity.CPU]
    use_device = device.type == "cuda"
    if use_device:
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            fn()
        if use_device:
            torch.cuda.synchronize(device)
    out = shares_from_events(prof.events(), use_device)
    out["time_basis"] = "self device (CUDA kernel) time" if use_device else "self CPU time"
    out["repeats"] = repeats
    out["total_ms"] /= repeats
    for name in CATEGORIES:
        out[f"{name}_ms"] /= repeats
    return out
