"""Per-cell profiling: parameters, FLOPs (fvcore, two conventions), CPU latency.

Interim version with the contract the harness relies on (``ProfileSpec``,
``profile_model``); the full profiler (throughput sweep, memory, time breakdown) extends it.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field


class ProfileError(Exception):
    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


class ProfileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flops: bool = True
    conventions: list[str] = Field(default_factory=lambda: ["published", "full"])
    max_unsupported: int = Field(default=0, ge=0)
    latency: bool = True
    warmup: int = Field(default=10, ge=0)
    samples: int = Field(default=30, ge=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [1])
    input_size: list[int] | None = None
    threads: int | None = Field(default=None, ge=1)
    precision: Literal["fp32", "amp", "bf16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    memory: bool = True
    breakdown: bool = False
    train_step: bool = False
    cross_check: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"


class _PositionalWrapper(nn.Module):
    """fvcore traces ``forward(*tensors)``; rebuild the inputs dict and return a tensor."""

    def __init__(self, model: nn.Module, keys: list[str]):
        super().__init__()
        self.model = model
        self.keys = keys

    def forward(self, *tensors):
        out = self.model(dict(zip(self.keys, tensors)))
        if isinstance(out, dict):
            out = out["logits"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out


#: element-wise and shape ops that no convention counts (fvcore's own table leaves some of
#: these "unsupported"; the seed repositories' flops() ignore them too, fvcore issue #143)
ELEMENTWISE_OPS = [
    "aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_", "aten::div",
    "aten::silu", "aten::silu_", "aten::gelu", "aten::relu", "aten::relu_", "aten::sigmoid",
    "aten::softmax", "aten::exp", "aten::neg", "aten::flip", "aten::softplus", "aten::tanh",
    "aten::hardswish", "aten::hardswish_", "aten::leaky_relu", "aten::clamp", "aten::pow",
    "aten::sqrt", "aten::rsqrt", "aten::abs", "aten::mean", "aten::sum", "aten::max_pool2d",
    "aten::avg_pool2d", "aten::adaptive_max_pool2d", "aten::scaled_dot_product_attention",
]


def count_flops(model: nn.Module, inputs: dict[str, torch.Tensor], convention: str):
    import kernels
    from fvcore.nn import FlopCountAnalysis

    keys = list(inputs)
    wrapper = _PositionalWrapper(model, keys).eval()
    with kernels.scan_backend("shape"), torch.no_grad():
        analysis = FlopCountAnalysis(wrapper, tuple(inputs[k] for k in keys))
        analysis.set_op_handle(**{op: None for op in ELEMENTWISE_OPS})
        analysis.set_op_handle(**kernels.flops.fvcore_handles(convention))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        total = analysis.total()
        unsupported = dict(analysis.unsupported_ops())
    return total, unsupported


def measure_latency(model: nn.Module, inputs: dict[str, torch.Tensor], warmup: int,
                    samples: int) -> dict[str, float]:
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(inputs)
        for _ in range(samples):
            start = time.perf_counter()
            model(inputs)
            times.append((time.perf_counter() - start) * 1e3)
    q1, q3, p90 = np.percentile(times, [25, 75, 90])
    return {"latency_ms_median": statistics.median(times), "latency_ms_iqr": float(q3 - q1),
            "latency_ms_p90": float(p90), "latency_samples": len(times)}


def profile_model(model: nn.Module, example_inputs: dict[str, torch.Tensor], spec: ProfileSpec,
                  device: str | torch.device = "cpu", target: torch.Tensor | None = None) -> dict:
    model = model.eval()
    result: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters())}
    result["params_m"] = result["params"] / 1e6
    threads = spec.threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if spec.flops:
            for convention in spec.conventions:
                total, unsupported = count_flops(model, example_inputs, convention)
                result[f"gmacs_{convention}"] = total / 1e9
                result["unsupported_ops"] = unsupported
        if spec.latency:
            result.update(measure_latency(model, example_inputs, spec.warmup, spec.samples))
    finally:
        torch.set_num_threads(previous_threads)
    result["env"] = {"threads": threads, "precision": spec.precision,
                     "channels_last": spec.channels_last, "device": str(device)}
    unsupported_total = sum(result.get("unsupported_ops", {}).values())
    if unsupported_total > spec.max_unsupported:
        raise ProfileError(f"{unsupported_total} ops without a FLOP handle (limit "
                           f"{spec.max_unsupported}): {result['unsupported_ops']}", result)
    return result
