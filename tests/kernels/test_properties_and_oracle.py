"""Hypothesis property tests over the shape space, and ``ref`` against mamba_ssm's own
``selective_scan_ref`` where mamba_ssm is installed (a CPU-only install works once its two
compiled modules have stand-ins; see docs/kernels.md)."""
import sys
import types

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.scan import max_scaled_error, run_scan, scan_inputs

shapes = st.tuples(
    st.integers(1, 2),                        # batch
    st.sampled_from([1, 2, 4]),               # groups (0 -> 3-D B/C, see below)
    st.integers(1, 20),                       # channels per group
    st.integers(1, 70),                       # length
    st.sampled_from([1, 2, 3, 4, 8, 16, 17]),  # dstate: compiled (1..16) and runtime sizes
    st.booleans(),                            # grouped 4-D B/C
    st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),  # D z bias softplus
)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=shapes)
def test_backends_agree_with_ref_on_random_shapes(cpu_kernel, shape):
    batch, groups, per_group, length, dstate, grouped, (w_d, w_z, w_b, softplus) = shape
    dim = groups * per_group
    inputs = scan_inputs(batch, dim, length, dstate, groups if grouped else None,
                         with_D=w_d, with_z=w_z, with_bias=w_b, seed=length)
    ref = run_scan(inputs, "ref", softplus)
    for backend in ("torch", "cpu"):
        got = run_scan(inputs, backend, softplus)
        assert max_scaled_error(ref[0], got[0]) < 1e-4, backend
        assert max_scaled_error(ref[1], got[1]) < 1e-4, backend
        for name in ref[2]:
            assert max_scaled_error(ref[2][name], got[2][name]) < 1e-4, (backend, name)


@pytest.fixture(scope="module")
def mamba_selective_scan_ref():
    for name in ("selective_scan_cuda", "causal_conv1d_cuda"):
        sys.modules.setdefault(name, types.ModuleType(name))
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    except ImportError as exc:
        pytest.skip(f"mamba_ssm not importable ({exc}); install it with its CUDA build skipped "
                    "to run this oracle test")
    return selective_scan_ref


@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("opts", [(True, True, True, True), (False, False, False, False)])
def test_ref_matches_mamba_ssm_selective_scan_ref(mamba_selective_scan_ref, groups, opts):
    w_d, w_z, w_b, softplus = opts
    inputs = scan_inputs(2, 4, 130, 8, groups, with_D=w_d, with_z=w_z, with_bias=w_b)
    ours, last = run_scan(inputs, "ref", softplus)[:2]
    theirs, their_last = mamba_selective_scan_ref(**inputs, delta_softplus=softplus,
                                                  return_last_state=True)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert torch.allclose(last, their_last, rtol=1e-5, atol=1e-5)
