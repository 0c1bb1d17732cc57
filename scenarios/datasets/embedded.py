"""Embedded datasets: generated or bundled, never downloaded."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ._tensor import TensorClassificationDataset


def cache_dir() -> Path:
    """The folder where generated datasets are cached: ``$KTA_DATA`` or ``~/.cache/kta``."""
    return Path(os.environ.get("KTA_DATA") or Path.home() / ".cache" / "kta")


def stratified_split(y: np.ndarray, test_fraction: float, seed: int):
    """Indices ``(train, test)`` that give ``round(n * test_fraction)`` samples of every class to the test side
    (seeded, sorted)."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))


def digits(test_fraction: float = 0.3, seed: int = 0):
    """scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes).

    Returns ``(train, test)`` :class:`TensorClassificationDataset` with images of
    shape ``(1, 8, 8)`` scaled to ``[0, 1]``; the split is stratified and seeded.

    Example:
        >>> train, test = digits()
        >>> train.x.shape[1:]
        torch.Size([1, 8, 8])
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = np.asarray(data.target)
    tr, te = stratified_split(y, test_fraction, seed)
    y = torch.tensor(y, dtype=torch.long)
    return TensorClassificationDataset(x[tr], y[tr]), TensorClassificationDataset(x[te], y[te])


def mnist1d_args(**overrides) -> dict:
    """The MNIST-1D generator's default arguments (Greydanus 2020), with overrides.

    Unknown keys raise ``ValueError`` naming them.
    """
    from mnist1d.data import get_dataset_args

    args = dict(vars(get_dataset_args()))
    unknown = sorted(set(overrides) - set(args))
    if unknown:
        raise ValueError(
            f"unknown mnist1d generator argument(s) {unknown}; known: {sorted(args)}"
        )
    args.update(overrides)
    return args


def atomic_savez(arrays: dict, path: Path) -> None:
    """Write ``arrays`` to ``path`` (.npz) so that a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_arrays(prefix: str, args: dict, make) -> dict:
    """The arrays ``make()`` returns for ``args``, cached as ``<cache_dir>/<prefix>-<hash>.npz``.

    An unreadable cache file is regenerated; a new one is written atomically.
    """
    key = hashlib.sha1(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir() / f"{prefix}-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except Exception:
            path.unlink(missing_ok=True)  # unreadable cache: regenerate
    data = {k: np.asarray(v) for k, v in make().items()}
    atomic_savez(data, path)
    return data


def mnist1d_arrays(**generator_args) -> dict:
    """Generate (or read from the cache) the raw MNIST-1D arrays for these arguments."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    args = mnist1d_args(**generator_args)

    def make():
        data = make_dataset(ObjectView(args))
        return {k: data[k] for k in ("x", "y", "t", "x_test", "y_test")}

    return cached_arrays("mnist1d", args, make)


def mnist1d(**generator_args):
    """MNIST-1D (Greydanus 2020) generated offline with the ``mnist1d`` package.

    Default arguments reproduce the benchmark (4,000 train / 1,000 test signals
    of length 40, 10 classes); any generator argument (``shear_scale``,
    ``iid_noise_scale``, ``seed``, ...) gives a shifted variant. The arrays are
    cached under :func:`cache_dir` and regenerated when absent.

    Returns ``(train, test)`` :class:`TensorClassificationDataset` with inputs of
    shape ``(1, 40)`` (one channel, for 1-D convolutions).

    Example:
        >>> train, test = mnist1d(shear_scale=2.0)
    """
    data = mnist1d_arrays(**generator_args)
    def make(x, y):
        return TensorClassificationDataset(
            torch.tensor(np.asarray(x), dtype=torch.float32).unsqueeze(1),
            torch.tensor(np.asarray(y), dtype=torch.long),
        )
    return make(data["x"], data["y"]), make(data["x_test"], data["y_test"])
