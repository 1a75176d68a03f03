from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: real-model or real-data tests (still run in CI)")


@pytest.fixture
def data_root() -> Path:
    """The upstream data root from PAS_DATA_ROOT; the test is skipped when it is unset."""
    root = os.environ.get("PAS_DATA_ROOT")
    if not root:
        pytest.skip("PAS_DATA_ROOT is not set; point it at the folder with bbq/, ethics/, caa/, ...")
    return Path(root)
