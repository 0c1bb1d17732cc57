import os
import warnings

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic(tmp_path_factory, monkeypatch):
    """Seeded, single-threaded, and with generated datasets cached in a per-session folder."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    monkeypatch.setenv("KTA_DATA", os.environ.get("KTA_TEST_DATA") or str(tmp_path_factory.getbasetemp() / "kta-data"))
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    yield
