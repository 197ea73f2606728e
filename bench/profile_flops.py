"""FLOPs of a multimodal segmentation model: fvcore over the real input dict, two conventions.

fvcore (``FlopCountAnalysis``) traces ``forward(*tensors) -> tensor`` only, so the model is
wrapped to rebuild its inputs dict from positional tensors and to return the logits of a dict or
tuple output (harness.md §3 pitfalls). fvcore counts one fused multiply-add as one FLOP, so every
number here is in MACs ("GMACs", as timm names them).

Conventions (kernels/flops.py): *published* skips the selective scan, as the seed repositories'
``flops()`` do; *full* counts it as 9·B·L·D·N + B·D·L (state-spaces/mamba#110). Both come from
one trace: the conventions differ only in the handles of the kernel ops, and an op whose handle
is zero in a convention is subtracted from the full count per module.

Cross-check: ``torch.utils.flop_counter.FlopCounterMode`` counts at dispatch (no tracing) and
gives 2 FLOPs per MAC; for the ops both count (matmuls and convolutions) the two must agree.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

import torch
import torch.nn as nn

#: element-wise and shape ops that no convention counts (fvcore's table leaves some of these
#: "unsupported"; the seed repositories' flops() ignore them too, fvcore issue #143)
ELEMENTWISE_OPS = [
    "aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_", "aten::div",
    "aten::silu", "aten::silu_", "aten::gelu", "aten::relu", "aten::relu_", "aten::sigmoid",
    "aten::softmax", "aten::exp", "aten::neg", "aten::flip", "aten::softplus", "aten::tanh",
    "aten::hardswish", "aten::hardswish_", "aten::leaky_relu", "aten::clamp", "aten::pow",
    "aten::sqrt", "aten::rsqrt", "aten::abs", "aten::mean", "aten::sum", "aten::max_pool2d",
    "aten::avg_pool2d", "aten::adaptive_max_pool2d", "aten::scaled_dot_product_attention",
    "aten::hardtanh", "aten::hardtanh_", "aten::amax", "aten::amin", "aten::max", "aten::min",
    "aten::log_softmax", "aten::div_", "aten::sub_", "aten::exp_", "aten::sigmoid_",
    "aten::gelu_", "aten::erf", "aten::log", "aten::sin", "aten::cos", "aten::cumsum",
    "aten::var", "aten::std", "aten::norm", "aten::linalg_vector_norm", "aten::elu",
    "aten::mish", "aten::square", "aten::reciprocal", "aten::where", "aten::masked_fill",
    "aten::argmax", "aten::argmin",
]
#: data movement and identities at inference: 0 MACs in every convention
DATA_MOVEMENT_OPS = [
    "aten::feature_dropout", "aten::dropout", "aten::dropout_", "aten::pad",
    "aten::constant_pad_nd", "aten::movedim", "aten::roll", "aten::embedding",
    "aten::repeat_interleave", "aten::one_hot", "aten::arange", "aten::meshgrid",
    "aten::unflatten", "aten::tril", "aten::triu", "aten::randn", "aten::randn_like",
    "aten::rand", "aten::rand_like", "aten::normal", "aten::bernoulli",
]

#: fvcore operator names (namespace stripped) that FlopCounterMode also counts
FVCORE_MATMUL_CONV_OPS = ("linear", "matmul", "mm", "addmm", "bmm", "einsum", "conv",
                          "_convolution", "conv1d", "conv2d", "conv_transpose2d",
                          "PythonOp.CausalConv1dFn")  # a depthwise conv1d at dispatch level
#: FlopCounterMode (aten overload packets) ops that are matmuls or convolutions
DISPATCH_MATMUL_CONV_OPS = ("mm", "addmm", "bmm", "baddbmm", "convolution", "_convolution")


class TraceableModel(nn.Module):
    """``forward(*tensors)`` for tracers: rebuilds the inputs dict, returns one tensor (the
    ``logits`` of a dict output, the first element of a tuple/list output)."""

    def __init__(self, model: nn.Module, keys: list[str]):
        super().__init__()
        self.model = model
        self.keys = list(keys)

    def forward(self, *tensors):
        out = self.model(dict(zip(self.keys, tensors)))
        if isinstance(out, dict):
            out = out["logits"] if "logits" in out else next(iter(out.values()))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out


# kept for callers of the interim module
_PositionalWrapper = TraceableModel


def _handle_name(op: str) -> str:
    p = op.find("::")
    return op[p + 2:] if p != -1 else op


def _is_zero(handle) -> bool:
    import kernels

    return handle is None or handle is kernels.flops.zero_handle


def _analysis(model: nn.Module, inputs: dict[str, torch.Tensor], convention: str):
    import kernels
    from fvcore.nn import FlopCountAnalysis

    keys = list(inputs)
    wrapper = TraceableModel(model, keys).eval()
    analysis = FlopCountAnalysis(wrapper, tuple(inputs[k] for k in keys))
    analysis.set_op_handle(**{op: None for op in ELEMENTWISE_OPS + DATA_MOVEMENT_OPS})
    analysis.set_op_handle(**kernels.flops.fvcore_handles(convention))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def _strip(name: str) -> str:
    """fvcore module names are the wrapper's: "" (total), "model", "model.encoder" ..."""
    if name in ("", "model"):
        return ""
    return name[len("model."):] if name.startswith("model.") else name


def flop_analysis(model: nn.Module, inputs: dict[str, torch.Tensor],
                  conventions=("published", "full"), depth: int = 2,
                  scan_backend: str = "shape") -> dict[str, Any]:
    """Every convention from one fvcore trace.

    Returns ``{"gmacs": {conv: G}, "by_module": {name: {conv: G}}`` (modules up to ``depth``
    levels below the model, "" the total), ``"by_operator": {op: G}`` (full convention),
    ``"unsupported_ops": {op: calls}``, ``"trace_s"``}. The scan runs with ``scan_backend``
    (``shape``: zeros of the right shape, the count needs shapes only)."""
    import kernels

    full_handles = kernels.flops.fvcore_handles("full")
    zeroed: dict[str, list[str]] = {}
    separate = []
    for conv in conventions:
        handles = kernels.flops.fvcore_handles(conv)
        diff = [op for op, h in handles.items() if h is not full_handles.get(op)]
        if all(_is_zero(handles[op]) for op in diff):
            zeroed[conv] = [_handle_name(op) for op in diff]
        else:
            separate.append(conv)
    start = time.perf_counter()
    with kernels.scan_backend(scan_backend), torch.no_grad():
        analysis = _analysis(model, inputs, "full")
        per_module = analysis.by_module_and_operator()
        unsupported = dict(analysis.unsupported_ops())
        others = {conv: _analysis(model, inputs, conv).by_module() for conv in separate}
    trace_s = time.perf_counter() - start

    def total(ops: Counter, conv: str) -> float:
        skip = zeroed.get(conv, [])
        return sum(v for op, v in ops.items() if op not in skip)

    by_module: dict[str, dict[str, float]] = {}
    for name, ops in per_module.items():
        short = _strip(name)
        if short != name and name != "" and short == "":
            continue  # "model" duplicates the total
        if short.count(".") + (1 if short else 0) > depth:
            continue
        by_module[short] = {conv: (others[conv][name] if conv in others else total(ops, conv))
                            / 1e9 for conv in conventions}
    by_operator = {op: v / 1e9 for op, v in per_module[""].most_common()}
    return {"gmacs": dict(by_module[""]), "by_module": by_module, "by_operator": by_operator,
            "unsupported_ops": unsupported, "trace_s": trace_s}


def count_flops(model: nn.Module, inputs: dict[str, torch.Tensor],
                convention: str) -> tuple[float, dict[str, int]]:
    """(MACs in ``convention``, {op without a handle: calls}) of one forward on ``inputs``."""
    import kernels

    with kernels.scan_backend("shape"), torch.no_grad():
        analysis = _analysis(model, inputs, convention)
        total = analysis.total()
        unsupported = dict(analysis.unsupported_ops())
    return total, unsupported


def flop_counter_cross_check(model: nn.Module, inputs: dict[str, torch.Tensor],
                             by_operator_gmacs: dict[str, float],
                             scan_backend: str = "shape") -> dict[str, Any]:
    """FlopCounterMode (dispatch level, 2 FLOPs per MAC) against fvcore (trace level, MACs) for
    the ops both count: matmuls and convolutions. ``ratio`` = fvcore / (dispatch / 2)."""
    import kernels
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with kernels.scan_backend(scan_backend), torch.no_grad(), counter:
        TraceableModel(model, list(inputs)).eval()(*inputs.values())
    ops = {str(getattr(op, "__name__", op)).split(".")[0]: n
           for op, n in counter.get_flop_counts().get("Global", {}).items()}
    dispatch_flops = sum(n for op, n in ops.items() if op in DISPATCH_MATMUL_CONV_OPS)
    fvcore_gmacs = sum(v for op, v in by_operator_gmacs.items() if op in FVCORE_MATMUL_CONV_OPS)
    dispatch_gmacs = dispatch_flops / 2 / 1e9
    return {"fvcore_gmacs": fvcore_gmacs, "flop_counter_gflops": dispatch_flops / 1e9,
            "flop_counter_gmacs": dispatch_gmacs,
            "ratio": fvcore_gmacs / dispatch_gmacs if dispatch_gmacs else float("nan"),
            "flop_counter_ops": {op: n / 1e9 for op, n in ops.items()},
            "note": "FlopCounterMode counts 2 FLOPs per multiply-add; compared as MACs"}
