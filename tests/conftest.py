import os

import pytest
import torch

# Deterministic, bounded CPU use in tests: CI has 2 cores.
torch.set_num_threads(int(os.environ.get("SSMBENCH_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
