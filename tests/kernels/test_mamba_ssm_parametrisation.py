"""mamba_ssm's ``tests/ops/test_selective_scan.py`` parametrisation, for every ssmbench backend.

Facts taken from that file (state-spaces/mamba): batch 2, dim 4, dstate 8; input dtypes float32,
float16, bfloat16 for u, delta, z and the variable B/C (A, D and delta_bias stay float32);
A = -0.5 rand, delta = 0.5 rand, delta_bias = 0.5 rand, the rest standard normal; lengths
8, 16, 32, 64, 128, 256, 372, 512, 784, 1024, 1134, 2048, 4096; flags has_D, has_z,
has_delta_bias, delta_softplus; B/C groups 1 and 2 (ssmbench's B and C are always variable, so
``is_variable_B/C`` = True); tolerances

    output, last state   rtol, atol = 6e-4, 2e-3 (fp32) | 3e-3, 5e-3 (fp16) | 3e-2, 5e-2 (bf16)
    weights              rtolw, atolw = 1e-3, 1e-3, raised to rtol, atol when z is used
    du                   2 rtol, 2 atol         ddelta   5 rtol, 10 atol
    dA                   rtolw, 5 atolw         dB, dC   rtol, atol
    dD, dz, ddelta_bias  rtolw, atolw

The oracle is stricter than upstream's (its reference runs in the input dtype with float32
arithmetic): the sequential recurrence (``ref`` backend) in float64 on the same, already
rounded, inputs and the same output cotangent.

Runtime (12 s on 2 idle cores, about a minute when they are shared): the full flag grid
(16 flag combinations x 2 group counts x 3 dtypes x 3 backends) runs at the short lengths, one
length per flag combination in turn; every
length of the list runs for every dtype and backend with upstream's active flags (D, z,
delta_bias, softplus, groups 2), so 1024..4096 are covered without the whole grid at each length.
"""
import functools
import itertools

import pytest
import torch

import kernels

BATCH, DIM, DSTATE = 2, 4, 8
ITYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LENGTHS = (8, 16, 32, 64, 128, 256, 372, 512, 784, 1024, 1134, 2048, 4096)
SHORT_LENGTHS = (8, 16, 32, 64, 128, 256, 372)
BACKENDS = ("ref", "torch", "cpu")
FLAG_COMBOS = list(itertools.product((False, True), repeat=4))  # D, z, delta_bias, softplus

FLAG_GRID = [  # (itype, length, groups, flags): every flag combination, both group counts
    (itype, SHORT_LENGTHS[i % len(SHORT_LENGTHS)], groups, flags)
    for itype in ITYPES for i, flags in enumerate(FLAG_COMBOS) for groups in (1, 2)]
LENGTH_SWEEP = [(itype, length, 2, (True, True, True, True))
                for itype in ITYPES for length in LENGTHS]


def tolerances(itype: str, has_z: bool) -> dict[str, tuple[float, float]]:
    rtol, atol = {"fp32": (6e-4, 2e-3), "fp16": (3e-3, 5e-3), "bf16": (3e-2, 5e-2)}[itype]
    rtolw, atolw = 1e-3, 1e-3
    if has_z:
        rtolw, atolw = max(rtolw, rtol), max(atolw, atol)
    return {"out": (rtol, atol), "last": (rtol, atol), "u": (2 * rtol, 2 * atol),
            "delta": (5 * rtol, 10 * atol), "A": (rtolw, 5 * atolw), "B": (rtol, atol),
            "C": (rtol, atol), "D": (rtolw, atolw), "z": (rtolw, atolw),
            "delta_bias": (rtolw, atolw)}


@functools.lru_cache(maxsize=None)
def case_inputs(itype: str, length: int, groups: int, has_D: bool, has_z: bool,
                has_bias: bool) -> tuple[dict, torch.Tensor]:
    """Inputs in their test dtypes and the output cotangent (in the input dtype)."""
    g = torch.Generator().manual_seed(length * 131 + groups)
    dt = ITYPES[itype]

    def randn(*shape, dtype=dt):
        return torch.randn(*shape, generator=g).to(dtype)

    bc = (BATCH, DSTATE, length) if groups == 1 else (BATCH, groups, DSTATE, length)
    inputs = dict(
        u=randn(BATCH, DIM, length),
        delta=(0.5 * torch.rand(BATCH, DIM, length, generator=g)).to(dt),
        A=-0.5 * torch.rand(DIM, DSTATE, generator=g),
        B=randn(*bc), C=randn(*bc),
        D=randn(DIM, dtype=torch.float32) if has_D else None,
        z=randn(BATCH, DIM, length) if has_z else None,
        delta_bias=0.5 * torch.rand(DIM, generator=g) if has_bias else None,
    )
    return inputs, randn(BATCH, DIM, length)


def run(inputs: dict, cotangent: torch.Tensor, backend: str, softplus: bool, cast=None):
    leaves = {k: None if v is None else (v if cast is None else v.to(cast)).clone()
              .requires_grad_(True) for k, v in inputs.items()}
    out, last = kernels.selective_scan(**leaves, delta_softplus=softplus,
                                       return_last_state=True, backend=backend)
    (out * cotangent.to(out.dtype)).sum().backward()
    result = {"out": out.detach(), "last": last.detach()}
    result.update({k: v.grad for k, v in leaves.items() if v is not None})
    return result


@functools.lru_cache(maxsize=None)
def float64_oracle(itype, length, groups, flags):
    has_D, has_z, has_bias, softplus = flags
    inputs, cotangent = case_inputs(itype, length, groups, has_D, has_z, has_bias)
    return run(inputs, cotangent, "ref", softplus, cast=torch.float64)


def check(backend, itype, length, groups, flags):
    has_D, has_z, has_bias, softplus = flags
    inputs, cotangent = case_inputs(itype, length, groups, has_D, has_z, has_bias)
    got = run(inputs, cotangent, backend, softplus)
    want = float64_oracle(itype, length, groups, flags)
    assert set(got) == set(want)
    tol = tolerances(itype, has_z)
    for name, value in got.items():
        if name in inputs or name == "out":  # gradients in their input's dtype, out in u's
            assert value.dtype == inputs["u" if name == "out" else name].dtype, name
        assert value.shape == want[name].shape, name
        rtol, atol = tol[name]
        ok = torch.isclose(value.double(), want[name], rtol=rtol, atol=atol)
        assert bool(ok.all()), (
            f"{backend} {itype} L={length} groups={groups} flags={flags}: {name} off by "
            f"{float((value.double() - want[name]).abs().max()):.3g} "
            f"(rtol {rtol}, atol {atol}, {int((~ok).sum())} of {ok.numel()} elements)")


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "cpu":
        request.getfixturevalue("cpu_kernel")
    return request.param


@pytest.mark.parametrize("itype,length,groups,flags", FLAG_GRID,
                         ids=[f"{t}-L{n}-g{g}-" + "".join("DzbS"[i] if f else "_"
                                                          for i, f in enumerate(fl))
                              for t, n, g, fl in FLAG_GRID])
def test_flag_grid(backend, itype, length, groups, flags):
    check(backend, itype, length, groups, flags)


@pytest.mark.parametrize("itype,length,groups,flags", LENGTH_SWEEP,
                         ids=[f"{t}-L{n}" for t, n, _, _ in LENGTH_SWEEP])
def test_length_sweep(backend, itype, length, groups, flags):
    check(backend, itype, length, groups, flags)
