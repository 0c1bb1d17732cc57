"""The classic continual-learning benchmarks by name: split / permuted / rotated MNIST (real digits,
offline) in the three scenarios of van de Ven & Tolias (2019), and the same kinds on digits and MNIST-1D.

=====================  ===========================  ============================================
name                   scenario                     what the model sees
=====================  ===========================  ============================================
``split-mnist``        class-incremental (Class-IL) 5 experiences x 2 new digits, one 10-way head
``split-mnist-tasks``  task-incremental (Task-IL)   same, task label = experience (multi-head)
``split-mnist-domain`` domain-incremental (Domain-IL) same pairs, label = position in the pair,
                                                    one shared 2-way head, no task label
``permuted-mnist``     domain-incremental           all 10 digits, a new pixel permutation each
``rotated-mnist``      domain-incremental           all 10 digits, rotated 0..max_degrees
=====================  ===========================  ============================================

``split-digits-domain``, ``split-mnist1d-tasks``, ``split-mnist1d-domain`` and
``permuted-mnist1d`` complete the three kinds on the 8x8 digits and MNIST-1D.

MNIST here is :func:`scenarios.datasets.mnist5k` (5,000 real images, 400 train /
100 test per class by default); ``per_class`` keeps fewer (for quick runs and tests).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from . import shifts
from .registry import register_scenario
from .streams import class_incremental, domain_incremental, split_domain_incremental, task_incremental

__all__ = ["mnist5k_pair"]


def mnist5k_pair(seed: int = 0, test_fraction: float = 0.2, per_class: Optional[int] = None):
    """``mnist5k(test_fraction, seed)``, keeping the first ``per_class`` train and test images of each class."""
    from .datasets import TensorClassificationDataset, mnist5k

    train, test = mnist5k(test_fraction=test_fraction, seed=seed)
    if per_class is None:
        return train, test
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer or None, got {per_class!r}")

    def cap(ds):
        keep = torch.cat([torch.nonzero(ds.y == c).flatten()[:per_class] for c in range(10)]).sort().values
        return TensorClassificationDataset(ds.x[keep], ds.y[keep])

    return cap(train), cap(test)


def _check_n(n_experiences):
    if isinstance(n_experiences, bool) or not isinstance(n_experiences, int) or n_experiences < 1:
        raise ValueError(f"n_experiences must be a positive integer, got {n_experiences!r}")


def _permuted(pair, n_experiences, seed):
    _check_n(n_experiences)
    s = [shifts.Identity()] + [shifts.Permutation(seed=1000 * seed + i) for i in range(1, n_experiences)]
    return domain_incremental(pair, s)


def _rotated(pair, n_experiences, max_degrees):
    _check_n(n_experiences)
    step = max_degrees / max(n_experiences - 1, 1)
    return domain_incremental(pair, [shifts.Rotation(i * step) for i in range(n_experiences)])


# ---------------------------------------------------------------- MNIST (mnist5k)
@register_scenario("split-mnist")
def split_mnist(n_experiences: int = 5, class_order: Optional[Sequence[int]] = None, per_class: Optional[int] = None,
                test_fraction: float = 0.2, seed: int = 0):
    """Split MNIST (mnist5k), 5 experiences of 2 new digits, one head over 10 classes (class-incremental)."""
    return class_incremental(mnist5k_pair(seed, test_fraction, per_class), n_experiences=n_experiences,
                             class_order=class_order, seed=seed)


@register_scenario("split-mnist-tasks")
def split_mnist_tasks(n_experiences: int = 5, class_order: Optional[Sequence[int]] = None,
                      per_class: Optional[int] = None, test_fraction: float = 0.2, seed: int = 0):
    """Split MNIST (mnist5k), task label = experience: a multi-head model answers within the pair (task-incremental)."""
    return task_incremental(mnist5k_pair(seed, test_fraction, per_class), n_experiences=n_experiences,
                            class_order=class_order, seed=seed)


@register_scenario("split-mnist-domain")
def split_mnist_domain(n_experiences: int = 5, class_order: Optional[Sequence[int]] = None,
                       per_class: Optional[int] = None, test_fraction: float = 0.2, seed: int = 0):
    """Split MNIST (mnist5k), label = position of the digit in its pair, one shared 2-way head (domain-incremental)."""
    return split_domain_incremental(mnist5k_pair(seed, test_fraction, per_class), n_experiences=n_experiences,
                                    class_order=class_order, seed=seed)


@register_scenario("permuted-mnist")
def permuted_mnist(n_experiences: int = 5, per_class: Optional[int] = None, test_fraction: float = 0.2,
                   seed: int = 0):
    """MNIST (mnist5k), the first experience unpermuted, then a new pixel permutation each (domain-incremental)."""
    return _permuted(mnist5k_pair(seed, test_fraction, per_class), n_experiences, seed)


@register_scenario("rotated-mnist")
def rotated_mnist(n_experiences: int = 5, max_degrees: float = 90.0, per_class: Optional[int] = None,
                  test_fraction: float = 0.2, seed: int = 0):
    """MNIST (mnist5k) rotated by evenly spaced angles from 0 to max_degrees (domain-incremental)."""
    return _rotated(mnist5k_pair(seed, test_fraction, per_class), n_experiences, max_degrees)


# ---------------------------------------------------------------- digits and MNIST-1D
@register_scenario("split-digits-domain")
def split_digits_domain(n_experiences: int = 5, seed: int = 0):
    """scikit-learn digits, 5 pairs of classes, label = position in the pair, one 2-way head (domain-incremental)."""
    return split_domain_incremental("digits", n_experiences=n_experiences, seed=seed)


@register_scenario("split-mnist1d-tasks")
def split_mnist1d_tasks(n_experiences: int = 5, seed: int = 0):
    """MNIST-1D, 5 experiences of 2 classes, task label = experience (task-incremental)."""
    return task_incremental("mnist1d", n_experiences=n_experiences, seed=seed)


@register_scenario("split-mnist1d-domain")
def split_mnist1d_domain(n_experiences: int = 5, seed: int = 0):
    """MNIST-1D, 5 pairs of classes, label = position in the pair, one 2-way head (domain-incremental)."""
    return split_domain_incremental("mnist1d", n_experiences=n_experiences, seed=seed)


@register_scenario("permuted-mnist1d")
def permuted_mnist1d(n_experiences: int = 5, seed: int = 0):
    """MNIST-1D, the first experience unpermuted, then a new permutation of the 40 positions each (domain-incremental)."""
    from .streams import load_dataset

    return _permuted(load_dataset("mnist1d"), n_experiences, seed)
