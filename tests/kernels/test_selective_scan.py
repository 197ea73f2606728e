"""Every backend against the sequential reference: forward, last state and all gradients."""
import logging

import pytest
import torch

import kernels
from kernels.backends import torch_chunked
from tests.helpers.scan import max_scaled_error, run_scan, scan_inputs

# (batch, dim, length, dstate, groups): odd lengths, L=1, grouped B/C, channel counts that
# leave partial SIMD blocks (the cpu kernel runs 16 channels per block)
SHAPES = [
    (2, 8, 37, 5, None),
    (1, 6, 1, 3, 3),
    (2, 12, 130, 16, 4),
    (1, 40, 67, 16, None),
    (1, 4, 200, 4, 2),
    (2, 34, 33, 1, 2),
    (1, 3, 9, 7, None),
]
OPTIONS = [  # (D, z, delta_bias, softplus)
    (True, True, True, True),
    (False, False, False, False),
    (True, False, True, True),
    (False, True, False, True),
]


def _compare(backend, shape, opts, tol=1e-4):
    b, d, length, n, groups = shape
    with_D, with_z, with_bias, softplus = opts
    inputs = scan_inputs(b, d, length, n, groups, with_D=with_D, with_z=with_z,
                         with_bias=with_bias)
    ref = run_scan(inputs, "ref", softplus)
    got = run_scan(inputs, backend, softplus)
    assert got[0].shape == ref[0].shape and got[0].dtype == ref[0].dtype
    assert max_scaled_error(ref[0], got[0]) < tol
    assert max_scaled_error(ref[1], got[1]) < tol
    assert set(got[2]) == set(ref[2])
    for name in ref[2]:
        assert got[2][name].shape == ref[2][name].shape, name
        assert max_scaled_error(ref[2][name], got[2][name]) < tol, name


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("opts", OPTIONS)
def test_torch_backend_matches_ref(shape, opts):
    _compare("torch", shape, opts)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("opts", OPTIONS)
def test_cpu_backend_matches_ref(cpu_kernel, shape, opts):
    _compare("cpu", shape, opts)


def test_long_sequence_slow_decay(cpu_kernel):
    """mamba_ssm's own test regime (long L, slow decay: errors would accumulate)."""
    inputs = scan_inputs(1, 2, 2048, 4, None, with_z=False)
    ref = run_scan(inputs, "ref")
    for backend in ("torch", "cpu"):
        got = run_scan(inputs, backend)
        assert max_scaled_error(ref[0], got[0]) < 1e-4, backend
        for name in ref[2]:
            assert max_scaled_error(ref[2][name], got[2][name]) < 1e-4, (backend, name)


def test_torch_chunk_shrinks_under_huge_decay():
    """delta*|A| ~ 200 would overflow a 64-step log-space chunk; the chunk falls to 1 step."""
    inputs = scan_inputs(1, 4, 50, 4, None, with_z=False, with_bias=False)
    inputs["A"] = inputs["A"] * 400.0 - 1.0
    dt = torch.nn.functional.softplus(inputs["delta"])
    assert torch_chunked.choose_chunk(dt, inputs["A"], 64) == 1
    ref = run_scan(inputs, "ref")
    got = run_scan(inputs, "torch")
    assert torch.isfinite(got[0]).all()
    assert max_scaled_error(ref[0], got[0]) < 1e-4
    for name in ref[2]:
        assert max_scaled_error(ref[2][name], got[2][name]) < 1e-4, name


@pytest.mark.parametrize("backend", ["ref", "torch", "cpu"])
def test_gradcheck_float64(backend, request):
    if backend == "cpu":
        request.getfixturevalue("cpu_kernel")
    inputs = scan_inputs(1, 3, 6, 2, None, dtype=torch.float64)
    names = list(inputs)
    leaves = [inputs[k].clone().requires_grad_(True) for k in names]

    def fn(*args):
        return kernels.selective_scan(**dict(zip(names, args)), delta_softplus=True,
                                      backend=backend)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_float64_grouped(cpu_kernel):
    inputs = scan_inputs(1, 4, 5, 3, 2, dtype=torch.float64, with_z=False)
    names = [k for k, v in inputs.items() if v is not None]
    leaves = [inputs[k].clone().requires_grad_(True) for k in names]

    def fn(*args):
        return kernels.selective_scan(**dict(zip(names, args)), delta_softplus=False,
                                      backend="cpu")

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_half_precision_inputs_computed_in_float32(backend, request):
    if backend == "cpu":
        request.getfixturevalue("cpu_kernel")
    inputs = scan_inputs(1, 8, 20, 4, None)
    low = {k: v.to(torch.bfloat16) for k, v in inputs.items()}
    out = kernels.selective_scan(**low, delta_softplus=True, backend=backend)
    ref = kernels.selective_scan(**{k: v.float() for k, v in low.items()},
                                 delta_softplus=True, backend="ref")
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, ref.to(torch.bfloat16))


def test_auto_prefers_cpu_kernel_on_cpu(cpu_kernel):
    assert kernels.available_backends("cpu")[:3] == ["cpu", "torch", "ref"]
    assert kernels.resolve_backend("auto", "cpu").name == "cpu"
    assert "cpu" not in kernels.available_backends("cuda")


def test_unavailable_backend_falls_back_with_one_log_line(caplog, monkeypatch):
    import importlib

    ss = importlib.import_module("kernels.selective_scan")   # the module, not the function
    cuda = kernels.get_backend("cuda")
    monkeypatch.setattr(ss, "_FALLBACK_LOGGED", set())
    with caplog.at_level(logging.WARNING, logger="kernels.selective_scan"):
        first = kernels.resolve_backend("cuda", "cpu")
        second = kernels.resolve_backend("cuda", "cpu")
    assert first is second and first.name == kernels.available_backends("cpu")[0]
    assert not cuda.available()[0] or "cpu" not in cuda.devices
    lines = [r for r in caplog.records if "'cuda' unavailable" in r.getMessage()]
    assert len(lines) == 1


def test_cpu_build_failure_falls_back_to_torch(monkeypatch, caplog):
    from kernels.backends import cpu

    monkeypatch.setattr(cpu, "_STATE", {})
    monkeypatch.setenv("SSMBENCH_NO_CPP_KERNELS", "1")
    with caplog.at_level(logging.WARNING, logger="kernels.backends.cpu"):
        ok, why = kernels.get_backend("cpu").available()
        kernels.get_backend("cpu").available()
    assert not ok and "SSMBENCH_NO_CPP_KERNELS" in why
    assert kernels.resolve_backend("auto", "cpu").name == "torch"
    assert len([r for r in caplog.records if "falling back" in r.getMessage()]) == 1


def test_one_autograd_node_whatever_the_backend(cpu_kernel):
    inputs = scan_inputs(1, 4, 8, 2, None)
    inputs["u"].requires_grad_(True)
    for backend in ("ref", "torch", "cpu"):
        out = kernels.selective_scan(**inputs, delta_softplus=True, backend=backend)
        assert type(out.grad_fn).__name__ == "SelectiveScanFnBackward"


def test_bad_shapes_raise_clear_errors():
    inputs = scan_inputs(1, 4, 8, 2, None)
    with pytest.raises(ValueError, match="groups dividing dim=4"):
        kernels.selective_scan(**{**inputs, "B": torch.randn(1, 3, 2, 8)})
    with pytest.raises(ValueError, match="delta must have u's shape"):
        kernels.selective_scan(**{**inputs, "delta": torch.rand(1, 4, 7)})
    with pytest.raises(ValueError, match="unknown selective-scan backend"):
        kernels.selective_scan(**inputs, backend="nope")
