"""Data with a per-sample attribute (a nuisance or protected variable) next to the label.

For fair / invariant representation learning (:mod:`kta_plugins.adapt.fair`):
the task is the label ``y``; the attribute ``a`` is a variable the features
should not carry.

How the attribute travels: :class:`AttributeDataset` is a ``TensorDataset``
``(x, y, a)``. Avalanche appends the task label, so a sample is
``(x, y, a, task_label)`` and a minibatch ``[x, y, a, t]``: Avalanche's
``mb_x`` (``mbatch[0]``), ``mb_y`` (``mbatch[1]``) and ``mb_task_id``
(``mbatch[-1]``) are unchanged, and the attribute is ``mbatch[2]``. KTA's fast
tensor path (:mod:`scenarios.loaders`) materialises the same four fields (the
same layout as :class:`scenarios.multitask.MultiTaskDataset`).

:func:`fair_digits` (registered as ``fair-digits``): scikit-learn digits with a
binary *background* attribute: ``a = 1`` images get a grey background (an
intensity offset ``level`` added to every pixel), ``a = 0`` images stay dark;
both get a small random offset in ``[0, jitter)``. In training, the attribute is
correlated with the label: ``P(a = 1 | y >= 5) = P(a = 0 | y < 5) =
correlation``. The test stream is ``[same correlation, attribute independent of
the label]``; the second one is the set to probe features on (the attribute
cannot be guessed from the digit there, so chance is 50%).

Example:
    >>> bm = fair_digits(seed=0, correlation=0.9)
    >>> x, y, a, t = bm.train_stream[0].dataset[0]
    >>> bm.attribute_name, bm.n_attributes
    ('background', 2)
"""
from __future__ import annotations

import math

import torch

from scenarios.datasets import TensorClassificationDataset
from scenarios.registry import register_scenario
from scenarios.streams import avalanche_dataset as _av, make_scenario as _scenario, dataset_targets as _targets, load_dataset

__all__ = ["AttributeDataset", "correlated_attribute", "add_background", "attribute_scenario", "fair_digits"]


class AttributeDataset(TensorClassificationDataset):
    """A ``TensorDataset`` ``(x, y, a)``: inputs, integer labels and an integer attribute per sample.

    Avalanche reads ``targets`` (= ``y``) for its class timeline; a minibatch is
    ``[x, y, a, task_label]`` (the attribute is field 2).

    Args:
        x: inputs, first dimension indexes samples.
        y: integer class labels, shape ``(n,)``.
        a: integer attribute values ``>= 0``, shape ``(n,)``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor):
        super().__init__(x, y)
        a = torch.as_tensor(a)
        if a.ndim != 1 or len(a) != len(self.y):
            raise ValueError(f"a must be 1-D with one value per sample ({len(self.y)}), got shape {tuple(a.shape)}")
        if a.is_floating_point() and not torch.equal(a, a.round()):
            raise ValueError("a must hold integer attribute values")
        a = a.long()
        if len(a) and int(a.min()) < 0:
            raise ValueError(f"a must be >= 0, got min {int(a.min())}")
        self.tensors = (*self.tensors, a)

    @property
    def a(self) -> torch.Tensor:
        return self.tensors[2]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, x={tuple(self.x.shape[1:])}, classes={len(self.classes)}, "
                f"attribute values={sorted(int(v) for v in torch.unique(self.a))})")


def correlated_attribute(y: torch.Tensor, correlation: float, seed: int = 0) -> torch.Tensor:
    """A binary attribute that agrees with the label group with probability ``correlation``.

    The label group is ``g = 1`` for the upper half of the classes (``y >= (max + 1) / 2``,
    digits 5-9), ``0`` otherwise; ``a = g`` with probability ``correlation``, ``1 - g`` otherwise
    (``correlation = 0.5``: independent of the label).
    """
    if isinstance(correlation, bool) or not isinstance(correlation, (int, float)) or not 0 <= correlation <= 1:
        raise ValueError(f"correlation must be a number in [0, 1], got {correlation!r}")
    y = torch.as_tensor(y).long()
    group = (y >= (int(y.max()) + 1) / 2).long()
    agree = torch.rand(len(y), generator=torch.Generator().manual_seed(seed)) < correlation
    return torch.where(agree, group, 1 - group)


def add_background(x: torch.Tensor, a: torch.Tensor, level: float = 0.3, jitter: float = 0.1,
                   seed: int = 0) -> torch.Tensor:
    """``x + level * a + u``, ``u ~ U[0, jitter)`` per image: a grey background where ``a = 1``."""
    for name, v in (("level", level), ("jitter", jitter)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    u = jitter * torch.rand(len(x), generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    shape = (len(x),) + (1,) * (x.ndim - 1)
    return x + (level * a.to(x.dtype) + u).view(shape)


def attribute_scenario(train: AttributeDataset, tests, attribute_name: str = "attribute", **info):
    """One training experience on ``train`` and a test stream of ``tests`` (attribute datasets), task label 0.

    The benchmark gets ``attribute_name``, ``n_attributes``, ``n_classes``, ``input_shape``,
    ``kind="attribute"``, ``train_set`` and ``test_sets``, plus ``info``.
    """
    for i, ds in enumerate([train, *tests]):
        if not isinstance(ds, AttributeDataset):
            raise TypeError(f"attribute_scenario needs AttributeDataset objects, got {type(ds).__name__} "
                            f"({'train' if i == 0 else f'tests[{i - 1}]'})")
    n_attr = int(max(int(ds.a.max()) for ds in [train, *tests])) + 1
    classes = sorted(set(_targets(train).tolist()))
    bm = _scenario([_av(train, 0)], [_av(ds, 0) for ds in tests], kind="attribute", n_classes=len(classes),
                   input_shape=tuple(train.x.shape[1:]), n_experiences=1, attribute_name=attribute_name,
                   n_attributes=max(2, n_attr), **info)
    bm.train_set, bm.test_sets = train, list(tests)
    return bm


@register_scenario("fair-digits")
def fair_digits(seed: int = 0, correlation: float = 0.9, level: float = 0.3, jitter: float = 0.1):
    """digits with a grey-background attribute correlated with the label in training (``correlation``);
    test stream = [same correlation, attribute independent of the label]."""
    train, test = load_dataset("digits", seed=seed)
    a_train = correlated_attribute(train.y, correlation, seed=1000 + seed)
    a_corr = correlated_attribute(test.y, correlation, seed=2000 + seed)
    a_ind = correlated_attribute(test.y, 0.5, seed=3000 + seed)
    make = lambda ds, a, s: AttributeDataset(add_background(ds.x, a, level, jitter, seed=s), ds.y, a)  # noqa: E731
    return attribute_scenario(
        make(train, a_train, 4000 + seed),
        [make(test, a_corr, 5000 + seed), make(test, a_ind, 6000 + seed)],
        attribute_name="background", correlation=correlation, level=level, jitter=jitter,
        test_names=[f"correlated ({correlation})", "independent"])
