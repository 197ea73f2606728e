"""FLOPs of a multimodal segmentation model: fvcore over the real input dict, two conventions.

fvcore (``FlopCountAnalysis``) traces ``forward(*tensors) -> tensor`` only, so the model is
wrapped to rebuild its inputs dict from positional tensors and to return the logits of a dict or
tuple output (docs/profiling.md, fvcore's pitfalls). fvcore counts one fused multiply-add as
one FLOP, so every number here is in MACs ("GMACs", as timm names them).

Conventions (kernels/flops.py): *published* skips the selective scan, as the seed repositories'
``flops()`` do; *full* counts it as 9·B·L·D·N + B·D·L (state-spaces/mamba#110). Both come from
one trace: the conventions differ only in the handles of the kernel ops, and an op whose handle
is zero in a convention is subtracted from the full count per module.

What is counted, in every convention: every op that multiplies and adds. Convolutions, linear
layers and matmuls (fvcore's table); attention in all its forms, whose QK^T and AV products add
2·Lq·Lk·d MACs per batch·head (``aten::scaled_dot_product_attention``, nn.MultiheadAttention's
fused inference path ``aten::_native_multi_head_attention`` with its four projections, or
explicit matmuls); ``baddbmm``; einsum, counted exactly (``einsum_flop_handle``); fvcore's
normalisation, upsampling and pooling counts. Not counted (0): element-wise ops, softmax,
reductions, data movement (``ELEMENTWISE_OPS``, ``DATA_MOVEMENT_OPS``) and, in the *published*
convention, the selective scan.

Cross-check: ``torch.utils.flop_counter.FlopCounterMode`` counts at dispatch (no tracing) and
gives 2 FLOPs per MAC; for the ops both count (matmuls, convolutions, attention) the two must
agree.
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
    "aten::avg_pool2d", "aten::adaptive_max_pool2d",
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
FVCORE_MATMUL_CONV_OPS = ("linear", "matmul", "mm", "addmm", "bmm", "baddbmm", "einsum", "conv",
                          "_convolution", "conv1d", "conv2d", "conv_transpose2d",
                          "scaled_dot_product_attention", "_native_multi_head_attention",
                          "PythonOp.CausalConv1dFn")  # a depthwise conv1d at dispatch level
#: FlopCounterMode (aten overload packets) ops that are matmuls or convolutions; attention is
#: run unfused for the cross-check (math SDPA, no MultiheadAttention fast path), so its QK^T
#: and AV products arrive here as bmm / mm
DISPATCH_MATMUL_CONV_OPS = ("mm", "addmm", "bmm", "baddbmm", "convolution", "_convolution")


# ------------------------------------------------------------- multiply-add ops fvcore lacks
# Handles take fvcore's traced (inputs, outputs) and return MACs; they apply in every
# convention (conventions differ only in the selective scan, kernels/flops.py).


def _shape(value) -> list[int]:
    return list(value.type().sizes())


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def sdpa_flop_handle(inputs, outputs) -> int:
    """``aten::scaled_dot_product_attention(q (..., Lq, E), k (..., Lk, E), v (..., Lk, Ev))``:
    QK^T is ...·Lq·Lk·E MACs and AV ...·Lq·Lk·Ev (softmax and scaling are element-wise, 0).
    The batch·head dims are the output's (q and k/v broadcast)."""
    q, k, v = _shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2])
    batch = _prod(_shape(outputs[0])[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def native_mha_flop_handle(inputs, outputs) -> int:
    """``aten::_native_multi_head_attention(query (B, Lq, E), key (B, Lk, E), value, E, heads,
    qkv_weight, qkv_bias, proj_weight, ...)``, nn.MultiheadAttention's fused inference path
    (eval, batch_first): projections B·Lq·E·E (q) + 2·B·Lk·E·E (k, v) + B·Lq·E·E (out), and
    the attention 2·B·Lq·Lk·E (QK^T and AV over all heads: heads·(E/heads) = E)."""
    bsz, lq, embed = _shape(inputs[0])
    lk = _shape(inputs[1])[1]
    return 2 * bsz * lq * embed * embed + 2 * bsz * lk * embed * embed + 2 * bsz * lq * lk * embed


def baddbmm_flop_handle(inputs, outputs) -> int:
    """``aten::baddbmm(input, b1 (B, n, m), b2 (B, m, p))``: B·n·m·p MACs."""
    bsz, n, m = _shape(inputs[1])
    return bsz * n * m * _shape(inputs[2])[-1]


def einsum_flop_handle(inputs, outputs) -> int:
    """``aten::einsum(equation, [operands])``, counted exactly (fvcore's counter reads numpy's
    printed FLOP estimate, rounded to 4 significant digits). Operands are contracted pairwise
    along numpy's optimal path; a step that sums over at least one index costs the product of
    the sizes of all its indices; a step that sums nothing is an element-wise product (0, as
    ``aten::mul``); one operand alone is a permutation or reduction (0, as ``aten::sum``)."""
    import numpy as np

    equation = inputs[0].toIValue().replace(" ", "")
    shapes = [_shape(v) for v in inputs[1].node().inputs()]
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    spare = ""
    if "..." in lhs:  # spell the ellipsis out with unused capitals, right-aligned (broadcast)
        width = max(len(s) - len(t) + 3 for s, t in zip(shapes, terms) if "..." in t)
        spare = "".join(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in equation)[:width]
        terms = [t.replace("...", spare[width - (len(s) - len(t) + 3):]) for s, t in
                 zip(shapes, terms)]
        rhs = rhs.replace("...", spare)
    if not arrow:  # implicit output: the ellipsis dims, then the labels seen once, sorted
        letters = "".join(terms)
        rhs = spare + "".join(sorted(c for c in set(letters)
                                     if letters.count(c) == 1 and c not in spare))
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for label, size in zip(term, shape):
            sizes[label] = max(sizes.get(label, 1), int(size))
    if len(terms) < 2:
        return 0
    operands = [np.broadcast_to(np.zeros(()), [sizes[c] for c in t]) for t in terms]
    path = np.einsum_path(",".join(terms) + "->" + rhs, *operands, optimize="optimal")[0][1:]
    live = list(terms)
    macs = 0
    for step in path:
        picked = [live[i] for i in step]
        live = [t for i, t in enumerate(live) if i not in step]
        kept = set("".join(live)) | set(rhs)
        union = set("".join(picked))
        result = "".join(sorted(union & kept))
        if union - kept and len(picked) > 1:
            macs += _prod(sizes[c] for c in union)
        live.append(result)
    return macs


#: every multiply-add op fvcore's default table lacks or miscounts, in every convention
MATMUL_HANDLES = {
    "aten::scaled_dot_product_attention": sdpa_flop_handle,
    "aten::_native_multi_head_attention": native_mha_flop_handle,
    "aten::baddbmm": baddbmm_flop_handle,
    "aten::einsum": einsum_flop_handle,
}


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


def _handle_name(op: str) -> str:
    p = op.find("::")
    return op[p + 2:] if p != -1 else op


def _is_zero(handle) -> bool:
    import kernels

    return handle is None or handle is kernels.flops.zero_handle


def _analysis(model: nn.Module, inputs: dict[str, torch.Tensor], convention: str):
    from fvcore.nn import FlopCountAnalysis

    import kernels

    keys = list(inputs)
    wrapper = TraceableModel(model, keys).eval()
    analysis = FlopCountAnalysis(wrapper, tuple(inputs[k] for k in keys))
    analysis.set_op_handle(**{op: None for op in ELEMENTWISE_OPS + DATA_MOVEMENT_OPS})
    analysis.set_op_handle(**MATMUL_HANDLES)
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
    the ops both count: matmuls, convolutions and attention (run unfused at dispatch: math
    SDPA, MultiheadAttention's fast path off). ``ratio`` = fvcore / (dispatch / 2)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    import kernels

    counter = FlopCounterMode(display=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with kernels.scan_backend(scan_backend), torch.no_grad(), \
                sdpa_kernel(SDPBackend.MATH), counter:
            TraceableModel(model, list(inputs)).eval()(*inputs.values())
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
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
