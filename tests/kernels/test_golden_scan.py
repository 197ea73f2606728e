"""Every backend against golden selective-scan data made once by mamba_ssm's
``selective_scan_ref`` (tests/fixtures/scan/golden.pt; generator: make_golden.py beside it).
float32; with and without z, D and delta_bias, softplus on and off, B/C ungrouped (b, N, L) and
grouped (b, G, N, L) with G = 1, 2, 3, 4; forward output, last state and every gradient for a
fixed output cotangent. mamba_ssm is not needed here."""
from pathlib import Path

import pytest
import torch

import kernels
from tests.helpers.scan import max_scaled_error

GOLDEN = torch.load(Path(__file__).resolve().parents[1] / "fixtures" / "scan" / "golden.pt",
                    weights_only=True)
CASES = {case["name"]: case for case in GOLDEN["cases"]}


def test_golden_data_covers_the_options():
    names = {k for case in CASES.values() for k in case["inputs"]}
    assert names == {"u", "delta", "A", "B", "C", "D", "z", "delta_bias"}
    assert {case["delta_softplus"] for case in CASES.values()} == {True, False}
    assert {case["inputs"]["B"].dim() for case in CASES.values()} == {3, 4}
    assert any("z" not in c["inputs"] and "D" not in c["inputs"] for c in CASES.values())
    assert GOLDEN["source"].startswith("mamba_ssm")


@pytest.fixture(params=["ref", "torch", "cpu"])
def backend(request):
    if request.param == "cpu":
        request.getfixturevalue("cpu_kernel")
    return request.param


@pytest.mark.parametrize("name", list(CASES))
def test_backend_matches_mamba_ssm_golden(backend, name):
    case = CASES[name]
    leaves = {k: v.clone().requires_grad_(True) for k, v in case["inputs"].items()}
    out, last = kernels.selective_scan(**leaves, delta_softplus=case["delta_softplus"],
                                       return_last_state=True, backend=backend)
    (out * case["cotangent"]).sum().backward()
    assert max_scaled_error(case["out"], out.detach()) < 1e-5
    assert max_scaled_error(case["last_state"], last.detach()) < 1e-5
    assert set(case["grads"]) == set(leaves)
    for key, want in case["grads"].items():
        got = leaves[key].grad
        assert got.shape == want.shape, key
        assert max_scaled_error(want, got) < 1e-4, (key, max_scaled_error(want, got))
