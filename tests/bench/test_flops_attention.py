"""FLOPs of attention in all its forms and of einsum, against hand counts.

A 64-channel, 4-head self-attention over 256 tokens (batch 1) costs, in MACs:
    projections  4 · 256 · 64 · 64        = 4,194,304   (q, k, v, out)
    QK^T and AV  2 · 256 · 256 · 64       = 8,388,608   (heads · head_dim = 64)
    total                                   12,582,912  = 0.01258 GMACs
(the count before attention was counted: 0.00419, the projections alone).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from bench.profiling.flops import count_flops, flop_analysis, flop_counter_cross_check

L, C, HEADS = 256, 64, 4
PROJECTIONS = 4 * L * C * C
ATTENTION = 2 * L * L * C
TOTAL = PROJECTIONS + ATTENTION


class MHA(nn.Module):
    """nn.MultiheadAttention on ``inputs["x"]`` (B, L, C), self-attention."""

    def __init__(self, need_weights: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(C, HEADS, batch_first=True)
        self.need_weights = need_weights

    def forward(self, inputs):
        x = inputs["x"]
        return self.attn(x, x, x, need_weights=self.need_weights)[0]


class ExplicitAttention(nn.Module):
    """The same attention written with a fused qkv Linear, explicit matmuls and an out Linear."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(C, 3 * C)
        self.out = nn.Linear(C, C)

    def forward(self, inputs):
        x = inputs["x"]
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, C // HEADS).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-1, -2) / math.sqrt(C // HEADS)).softmax(-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, n, C))


class SDPA(nn.Module):
    def forward(self, inputs):
        q = inputs["x"].view(1, L, HEADS, C // HEADS).transpose(1, 2)
        return F.scaled_dot_product_attention(q, q, q)


def x_inputs():
    return {"x": torch.randn(1, L, C, generator=torch.Generator().manual_seed(0))}


@pytest.mark.parametrize("make,train", [
    (lambda: MHA(need_weights=False), False),   # eval, q = k = v: the fused fast path
    (lambda: MHA(need_weights=False), True),    # F.multi_head_attention_forward -> SDPA
    (lambda: MHA(need_weights=True), True),     # attention weights returned: bmm
    (ExplicitAttention, False),
], ids=["mha-fused-eval", "mha-sdpa", "mha-bmm", "explicit-matmuls"])
def test_self_attention_equals_the_hand_count(make, train):
    model = make().train(train)
    for convention in ("published", "full"):
        macs, unsupported = count_flops(model, x_inputs(), convention)
        assert macs == TOTAL, (convention, macs)
        assert not unsupported
    assert round(TOTAL / 1e9, 5) == 0.01258


def test_sdpa_alone_is_qk_plus_av():
    macs, unsupported = count_flops(SDPA(), x_inputs(), "published")
    assert macs == ATTENTION and not unsupported


@pytest.mark.parametrize("make", [lambda: MHA(need_weights=False), SDPA, ExplicitAttention])
def test_dispatch_cross_check_covers_attention(make):
    """FlopCounterMode runs attention unfused (bmm/mm) and must find the same MACs."""
    model = make().eval()
    analysis = flop_analysis(model, x_inputs())
    check = flop_counter_cross_check(model, x_inputs(), analysis["by_operator"])
    assert check["fvcore_gmacs"] == pytest.approx(analysis["gmacs"]["full"])
    assert check["ratio"] == pytest.approx(1.0)
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_cross_attention_fusion_counts_its_attention():
    """models/fusion/cross_attention.py at one stage: 16 channels, 1 head (head_dim 16), an 8x8
    map (64 queries) attending to 2 x 64 pooled tokens (max_tokens 64: no pooling at 8x8).
    merge 1x1 conv 64·32·16 + projections 64·16·16 (q) + 2·128·16·16 (k, v) + 64·16·16 (out)
    + attention 2·64·128·16 (plus fvcore's BatchNorm / LayerNorm counts, taken from the
    trace's own by-operator table)."""
    fusion = models.create_fusion("cross_attention", [16]).eval()

    class One(nn.Module):
        def __init__(self):
            super().__init__()
            self.fusion = fusion

        def forward(self, inputs):
            return self.fusion(0, inputs["a"], inputs["b"])

    inputs = {"a": torch.randn(1, 16, 8, 8), "b": torch.randn(1, 16, 8, 8)}
    analysis = flop_analysis(One(), inputs)
    ops = {k: round(v * 1e9) for k, v in analysis["by_operator"].items()}
    matmul_like = sum(v for k, v in ops.items() if k not in ("batch_norm", "layer_norm"))
    assert matmul_like == (64 * 32 * 16 + 64 * 16 * 16 + 2 * 128 * 16 * 16 + 64 * 16 * 16
                           + 2 * 64 * 128 * 16)
    assert not analysis["unsupported_ops"]


class Einsum(nn.Module):
    def __init__(self, equation, *shapes):
        super().__init__()
        self.equation = equation
        self.weights = nn.ParameterList(nn.Parameter(torch.zeros(s)) for s in shapes)

    def forward(self, inputs):
        return torch.einsum(self.equation, inputs["x"], *self.weights)


@pytest.mark.parametrize("equation,x_shape,shapes,by_hand", [
    # VMamba v2's x_proj at v2-T's first stage (B 1, K 4, D 192, L 56·56, C 6 + 2·16 = 38):
    # B·K·C·D·L, a grouped 1x1 conv's count
    ("bkdl,kcd->bkcl", (1, 4, 192, 3136), [(4, 38, 192)], 4 * 38 * 192 * 3136),
    ("bkrl,kdr->bkdl", (1, 4, 6, 3136), [(4, 192, 6)], 4 * 192 * 6 * 3136),
    # Twister's text-image cost volume: B·H·W·T·C
    ("bhwc,btc->bthw", (2, 7, 9, 32), [(2, 20, 32)], 2 * 7 * 9 * 20 * 32),
    # ellipsis and an implicit output (matrix product on the last two dims)
    ("...ij,jk", (3, 5, 11, 13), [(13, 7)], 3 * 5 * 11 * 13 * 7),
    # element-wise product, no summed index: 0, as aten::mul
    ("ij,ij->ij", (6, 5), [(6, 5)], 0),
    # three operands, contracted pairwise along the optimal path: (x·w1) then ·w2
    ("ij,jk,kl->il", (2, 3), [(3, 40), (40, 50)], 2 * 3 * 40 + 2 * 40 * 50),
])
def test_einsum_is_counted_exactly(equation, x_shape, shapes, by_hand):
    model = Einsum(equation, *shapes)
    macs, unsupported = count_flops(model, {"x": torch.zeros(x_shape)}, "published")
    assert macs == by_hand and not unsupported


def test_fvcore_einsum_counter_rounds_and_ours_does_not():
    """fvcore's own einsum counter parses numpy's printed estimate (4 significant digits): on
    VMamba v2's x_proj shape it is off by hundreds of MACs; the exact count is B·K·C·D·L."""
    xs, w = np.zeros((1, 4, 192, 3136)), np.zeros((4, 38, 192))
    line = [x for x in np.einsum_path("bkdl,kcd->bkcl", xs, w, optimize="optimal")[1]
            .splitlines() if "optimized flop" in x.lower()][0]
    rounded = math.floor(float(line.split(":")[-1]) / 2)
    exact = 4 * 38 * 192 * 3136
    assert rounded != exact
    macs, _ = count_flops(Einsum("bkdl,kcd->bkcl", (4, 38, 192)),
                          {"x": torch.zeros(1, 4, 192, 3136)}, "published")
    assert macs == exact
