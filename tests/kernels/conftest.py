"""Fixtures of the kernel tests; the C++ kernel is built once per session (and cached on disk
across sessions, see kernels/backends/cpu.py). Shared inputs are in tests/helpers/scan.py."""
import os

import pytest

import kernels


@pytest.fixture(scope="session")
def cpu_kernel():
    """The cpu backend, built once; fails (not skips) if the build fails, since CI has g++."""
    if os.environ.get("SSMBENCH_NO_CPP_KERNELS"):
        pytest.skip("C++ kernels disabled by SSMBENCH_NO_CPP_KERNELS")
    ok, why = kernels.get_backend("cpu").available()
    assert ok, why
    return kernels.get_backend("cpu")
