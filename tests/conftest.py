import os
import warnings

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic(tmp_path_factory, tmp_path, monkeypatch):
    """Seeded, single-threaded, run from a temporary folder (``kta run`` writes ``runs/`` there),
    with generated datasets cached in a per-session folder."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    monkeypatch.setenv("KTA_DATA", os.environ.get("KTA_TEST_DATA") or str(tmp_path_factory.getbasetemp() / "kta-data"))
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    yield
