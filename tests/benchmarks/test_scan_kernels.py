"""pytest-benchmark timings of the selective-scan backends at the issue's shapes (skipped in the
default run by ``--benchmark-skip``). Run: ``make kernels-bench`` or
``pytest tests/benchmarks --benchmark-enable --benchmark-only --benchmark-json=out.json``.
Groups are shapes; ``ref`` is only timed where it takes well under a second a call."""
import pytest
import torch

import kernels
from bench.config.schema import SweepShape
from bench.profiling.kernel_sweep import vmamba_inputs

FWD = [SweepShape(B=1, D=384, L=4096, N=16), SweepShape(B=1, D=192, L=1024, N=16),
       SweepShape(B=1, D=768, L=1024, N=16, G=4)]
FWDBWD = [SweepShape(B=1, D=192, L=1024, N=16)]


def _id(s):
    return f"{s.B}x{s.D}x{s.L}x{s.N}" + (f"g{s.G}" if s.G > 1 else "")


def _backend_or_skip(name):
    ok, why = kernels.get_backend(name).available()
    if not ok:
        pytest.skip(f"{name}: {why}")


@pytest.fixture(autouse=True)
def _two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("backend", ["ref", "torch", "cpu"])
@pytest.mark.parametrize("shape", FWD, ids=_id)
def test_forward(benchmark, backend, shape):
    _backend_or_skip(backend)
    benchmark.group = f"fwd {_id(shape)}"
    inputs = vmamba_inputs(shape)
    rounds = 2 if backend == "ref" else 10
    with torch.no_grad():
        out = benchmark.pedantic(kernels.selective_scan, kwargs=dict(
            **inputs, delta_softplus=True, backend=backend), rounds=rounds, warmup_rounds=1)
    assert out.shape == inputs["u"].shape


@pytest.mark.parametrize("backend", ["ref", "torch", "cpu"])
@pytest.mark.parametrize("shape", FWDBWD, ids=_id)
def test_forward_backward(benchmark, backend, shape):
    _backend_or_skip(backend)
    benchmark.group = f"fwdbwd {_id(shape)}"
    leaves = {k: v.requires_grad_(True) for k, v in vmamba_inputs(shape).items()}

    def step():
        for v in leaves.values():
            v.grad = None
        out = kernels.selective_scan(**leaves, delta_softplus=True, backend=backend)
        out.backward(torch.ones_like(out))

    benchmark.pedantic(step, rounds=2 if backend == "ref" else 10, warmup_rounds=1)
    assert leaves["A"].grad is not None
