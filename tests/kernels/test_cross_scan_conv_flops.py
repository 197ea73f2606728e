"""Cross-scan / cross-merge orders, the causal conv, and the FLOP formulas and fvcore handles."""
import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis

import kernels
from kernels import flops


def test_cross_scan_orders_on_3x4():
    """VMamba's CrossScan on a 3x4 map, worked by hand: k1 = column-major, k3 its reversal."""
    x = torch.arange(12.0).view(1, 1, 3, 4)
    y = kernels.cross_scan(x, "cross4")[0, :, 0].long().tolist()
    assert y[0] == list(range(12))
    assert y[1] == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    assert y[2] == list(range(11, -1, -1))
    assert y[3] == [11, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0]
    assert kernels.cross_scan(x, "bidir")[0, :, 0].long().tolist() == [y[0], y[2]]
    assert kernels.cross_scan(x, "unidir")[0, :, 0].long().tolist() == [y[0]]


@pytest.mark.parametrize("mode,k", [("cross4", 4), ("bidir", 2), ("unidir", 1)])
def test_merge_of_scan_is_k_times_identity_and_each_is_the_others_backward(mode, k):
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    y = kernels.cross_scan(x, mode)
    assert y.shape == (2, k, 3, 35)
    merged = kernels.cross_merge(y, 5, 7, mode)
    assert torch.allclose(merged.view_as(x), k * x)
    assert type(y.grad_fn).__name__ == "CrossScanFnBackward"
    assert type(merged.grad_fn).__name__ == "CrossMergeFnBackward"
    assert torch.autograd.gradcheck(lambda t: kernels.cross_scan(t, mode), (x,), fast_mode=True)
    yy = torch.randn(2, k, 3, 35, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: kernels.cross_merge(t, 5, 7, mode), (yy,),
                                    fast_mode=True)


def test_causal_conv1d_matches_direct_sum():
    x = torch.randn(2, 3, 9, dtype=torch.float64)
    w = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    out = kernels.causal_conv1d(x, w, b, activation="silu")
    expect = torch.zeros_like(x)
    for t in range(9):
        for k in range(4):
            src = t - 3 + k
            if src >= 0:
                expect[..., t] += w[:, k] * x[..., src]
    assert torch.allclose(out, F.silu(expect + b[:, None]))
    args = [t.clone().requires_grad_(True) for t in (x, w, b)]
    assert torch.autograd.gradcheck(
        lambda *a: kernels.causal_conv1d(*a, activation="silu"), args, fast_mode=True)
    assert type(out.grad_fn).__name__ == "CausalConv1dFnBackward" or out.grad_fn is None


def test_causal_conv1d_backward_under_bf16_autocast_matches_the_reference():
    """AMP: the node's backward replays the forward's autocast casts, so its gradients equal
    autograd through the reference under the same autocast (they used to mix dtypes)."""
    x = torch.randn(2, 8, 17, requires_grad=True)
    w = torch.randn(8, 4, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    grads = []
    for fn in (kernels.causal_conv1d, kernels.conv1d.causal_conv1d_reference):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(x, w, b, activation="silu")
        assert out.dtype == torch.bfloat16
        grads.append(torch.autograd.grad(out.float().sum(), (x, w, b)))
    for ours, ref in zip(*grads):
        assert ours.dtype == torch.float32 and torch.equal(ours, ref)


def test_scan_flop_formula_matches_vmamba_numbers():
    # VMamba classification/models/csms6s.py flops_selective_scan_fn, with D and no z:
    # 1x96x1024x16 -> 1.425e7, 1x768x4096x16 -> 4.561e8
    assert flops.selective_scan_flops(1, 1024, 96, 16) == 9 * 1024 * 96 * 16 + 1024 * 96
    assert round(flops.selective_scan_flops(1, 1024, 96, 16) / 1e7, 3) == 1.425
    assert round(flops.selective_scan_flops(1, 4096, 768, 16) / 1e8, 3) == 4.561
    assert flops.selective_scan_flops(2, 10, 4, 3, with_D=False, with_z=True) == \
        9 * 2 * 10 * 4 * 3 + 2 * 4 * 10
    # bytes: u, delta, out (B*D*L each), B and C (B*G*N*L each), A, D
    assert flops.selective_scan_bytes(1, 4096, 768, 16) == 4 * (3 * 768 * 4096 + 2 * 16 * 4096
                                                                + 768 * 16 + 768)


class _Block(torch.nn.Module):
    """cross-scan -> scan -> cross-merge plus a causal conv, as an SS2D / Mamba block does."""

    def __init__(self, c=4, n=3):
        super().__init__()
        self.A = torch.nn.Parameter(-torch.rand(4 * c, n))
        self.conv = torch.nn.Parameter(torch.randn(c, 4))
        self.n = n

    def forward(self, x):
        b, c, h, w = x.shape
        xs = kernels.cross_scan(x, "cross4").reshape(b, 4 * c, h * w)
        bc = torch.ones(b, 4, self.n, h * w)
        y = kernels.selective_scan(xs, xs.abs(), self.A, bc, bc, torch.ones(4 * c),
                                   delta_softplus=True)
        y = kernels.cross_merge(y.view(b, 4, c, h * w), h, w, "cross4")
        return kernels.causal_conv1d(y, self.conv)


@pytest.mark.parametrize("convention", ["full", "published"])
def test_fvcore_sees_one_node_per_op_with_its_handle(convention):
    model = _Block()
    x = torch.randn(1, 4, 3, 5)
    with kernels.scan_backend("shape"):
        counter = FlopCountAnalysis(model, (x,)).set_op_handle(**flops.fvcore_handles(convention))
        counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_op = counter.by_operator()
    scan = flops.selective_scan_flops(1, 15, 16, 3, with_D=True)
    assert by_op.get("PythonOp.SelectiveScanFn", 0) == (scan if convention == "full" else 0)
    assert by_op.get("PythonOp.CrossScanFn", 0) == 0
    assert by_op.get("PythonOp.CrossMergeFn", 0) == 0
    assert by_op["PythonOp.CausalConv1dFn"] == flops.causal_conv1d_flops(1, 4, 15, 4)
