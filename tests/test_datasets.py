import numpy as np
import pytest
import torch

from scenarios.datasets import cache_dir, digits, mnist1d, mnist1d_args


def test_digits_shapes_split_and_seed():
    train, test = digits()
    assert train.x.shape[1:] == (1, 8, 8) and train.x.dtype == torch.float32
    assert len(train) + len(test) == 1797
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    assert train.classes == test.classes == list(range(10))
    again, _ = digits()
    assert torch.equal(train.x, again.x) and torch.equal(train.y, again.y)
    other, _ = digits(seed=1)
    assert not torch.equal(train.y, other.y)


def test_digits_rejects_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        digits(test_fraction=1.5)


def test_mnist1d_default_benchmark_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KTA_DATA", str(tmp_path))
    train, test = mnist1d()
    assert train.x.shape == (4000, 1, 40) and test.x.shape == (1000, 1, 40)
    assert train.classes == list(range(10))
    files = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(files) == 1 and cache_dir() == tmp_path
    # the cached file is what is read next time
    again, _ = mnist1d()
    assert torch.equal(train.x, again.x)
    # removed cache -> regenerated identically
    files[0].unlink()
    third, _ = mnist1d()
    assert torch.equal(train.x, third.x)


def test_mnist1d_shifted_variant_differs(tmp_path, monkeypatch):
    monkeypatch.setenv("KTA_DATA", str(tmp_path))
    base, _ = mnist1d(num_samples=500)
    sheared, _ = mnist1d(num_samples=500, shear_scale=2.0)
    assert base.x.shape == sheared.x.shape
    assert not torch.allclose(base.x, sheared.x)
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 2


def test_mnist1d_unknown_argument_named():
    with pytest.raises(ValueError, match="shear"):
        mnist1d_args(shearr=1.0)
