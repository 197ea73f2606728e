from pathlib import Path

import pytest

from tests.helpers.suites import TOY_PLUGIN


@pytest.fixture
def write_suite(tmp_path):
    """Write a suite file (text) into tmp_path and return its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text.replace("TOY_PLUGIN", TOY_PLUGIN))
        return path

    return write
