import os

import pytest
import torch

# Deterministic, bounded CPU use in tests: CI has 2 cores.
torch.set_num_threads(int(os.environ.get("SSMBENCH_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_sessionstart(session):
    """Build the cpu scan kernel once, before the first test: otherwise whichever test needs it
    first (possibly a subprocess with a deadline, e.g. torchrun in test_ddp.py) pays the one-off
    build, a minute or more on 2 cores."""
    from kernels.backends import cpu

    try:
        cpu.load_library()
    except RuntimeError:
        pass  # unavailable here: the tests run on the torch backend, as a user's run would
