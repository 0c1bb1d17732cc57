"""Streams of tasks as Avalanche ``CLScenario`` objects.

Every stream built here carries task labels in its data (``0`` everywhere for
class- and domain-incremental streams, the experience index for
task-incremental ones), so Avalanche's ``LwFPlugin``, ``class_accuracy_metrics``
and multi-task models work on all of them, and every experience has the
classes timeline (``classes_in_this_experience``, ``previous_classes``,
``classes_seen_so_far``, ``future_classes``) and ``task_label``.

The datasets stay tensor-backed, so KTA strategies train them on the fast path.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .shifts import Shift

DatasetPair = tuple  # (train, test)

__all__ = ["class_incremental", "task_incremental", "domain_incremental", "load_dataset", "load_tensor_dataset",
           "stream_info"]


def load_dataset(dataset: Union[str, DatasetPair], **dataset_args) -> DatasetPair:
    """Resolve ``dataset`` (``"digits"``, ``"mnist1d"`` or a ``(train, test)`` pair)."""
    from . import datasets

    if isinstance(dataset, str):
        makers = {"digits": datasets.digits, "mnist1d": datasets.mnist1d}
        if dataset not in makers:
            raise ValueError(f"dataset must be one of {sorted(makers)} or a (train, test) pair, got {dataset!r}")
        return makers[dataset](**dataset_args)
    if not (isinstance(dataset, (tuple, list)) and len(dataset) == 2):
        raise TypeError(f"dataset must be a name or a (train, test) pair of datasets, got {type(dataset).__name__}")
    if dataset_args:
        raise TypeError(f"dataset_args {sorted(dataset_args)} only apply to a dataset given by name")
    return tuple(dataset)


def load_tensor_dataset(dataset, who: str, **dataset_args):
    """:func:`load_dataset`, requiring tensor-backed train and test sets (``who`` names the caller in the error)."""
    train, test = load_dataset(dataset, **dataset_args)
    for name, ds in (("train", train), ("test", test)):
        if not hasattr(ds, "tensors"):
            raise TypeError(f"{who} needs tensor-backed datasets; the {name} set is {type(ds).__name__}")
    return train, test


def _targets(ds: Dataset) -> np.ndarray:
    t = getattr(ds, "targets", None)
    if t is None:
        raise ValueError(f"dataset {type(ds).__name__} has no `targets` attribute (integer class labels)")
    return np.asarray(torch.as_tensor(t))


def _av(ds: Dataset, task_label: int, indices=None):
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_classification_dataset

    av = _make_taskaware_classification_dataset(ds, task_labels=task_label)
    return av if indices is None else av.subset(list(map(int, indices)))


def _scenario(train_sets, test_sets, **info):
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    bm = with_classes_timeline(with_task_labels(benchmark_from_datasets(train=train_sets, test=test_sets)))
    for k, v in info.items():
        setattr(bm, k, v)
    return bm


def stream_info(bm) -> dict:
    """What KTA knows of a stream built here: classes, input shape, kind."""
    keys = ("kind", "n_classes", "input_shape", "n_experiences", "classes_per_experience")
    return {k: getattr(bm, k) for k in keys if hasattr(bm, k)}


def _class_split(train, test, n_experiences, class_order, seed, task_labels: bool, kind: str):
    if isinstance(n_experiences, bool) or not isinstance(n_experiences, (int, np.integer)) or n_experiences < 1:
        raise ValueError(f"n_experiences must be a positive integer, got {n_experiences!r}")
    y_train, y_test = _targets(train), _targets(test)
    classes = sorted(set(y_train.tolist()))
    if class_order is None:
        rng = np.random.default_rng(seed)
        class_order = [classes[i] for i in rng.permutation(len(classes))]
    else:
        class_order = [int(c) for c in class_order]
        unknown = sorted(set(class_order) - set(classes))
        if unknown:
            raise ValueError(f"class_order has classes {unknown} that are not in the dataset (classes: {classes})")
        if sorted(class_order) != classes:
            missing = sorted(set(classes) - set(class_order))
            raise ValueError(
                f"class_order must list every class exactly once; missing {missing}"
                if missing else f"class_order repeats classes: {class_order}"
            )
    if len(classes) % n_experiences:
        raise ValueError(
            f"n_experiences={n_experiences} does not divide the {len(classes)} classes; "
            f"choose one of {[d for d in range(1, len(classes) + 1) if len(classes) % d == 0]}"
        )
    per = len(classes) // n_experiences
    groups = [class_order[i * per:(i + 1) * per] for i in range(n_experiences)]
    tr, te = [], []
    for e, g in enumerate(groups):
        t = e if task_labels else 0
        tr.append(_av(train, t, np.flatnonzero(np.isin(y_train, g))))
        te.append(_av(test, t, np.flatnonzero(np.isin(y_test, g))))
    return _scenario(
        tr, te, kind=kind, n_classes=len(classes), input_shape=tuple(train[0][0].shape),
        n_experiences=n_experiences, classes_per_experience=groups, class_order=class_order,
    )


def class_incremental(
    dataset: Union[str, DatasetPair] = "digits",
    n_experiences: int = 5,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 0,
    **dataset_args,
):
    """Class-incremental stream: each experience brings new classes, one shared task label 0.

    Args:
        dataset: ``"digits"``, ``"mnist1d"`` or a ``(train, test)`` pair of
            datasets with integer ``targets``.
        n_experiences: number of experiences; must divide the number of classes.
        class_order: order in which classes arrive (a permutation of the
            classes); random from ``seed`` when omitted.
        seed: seed of the class order.
        **dataset_args: passed to the named dataset's loader.

    Example:
        >>> bm = class_incremental("digits", n_experiences=5, seed=0)
        >>> sorted(bm.train_stream[0].classes_in_this_experience)
        [...]
    """
    train, test = load_dataset(dataset, **dataset_args)
    return _class_split(train, test, n_experiences, class_order, seed, False, "class-incremental")


def task_incremental(
    dataset: Union[str, DatasetPair] = "digits",
    n_experiences: int = 5,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 0,
    **dataset_args,
):
    """Task-incremental stream: like :func:`class_incremental`, experience ``i`` has task label ``i``.

    Labels stay the dataset's own (global) class ids; a multi-head model can use
    the task label to pick its head. Unlike Avalanche's
    ``task_incremental_benchmark``, the classes timeline is kept.
    """
    train, test = load_dataset(dataset, **dataset_args)
    return _class_split(train, test, n_experiences, class_order, seed, True, "task-incremental")


def domain_incremental(
    dataset: Union[str, DatasetPair] = "digits",
    shifts: Sequence[Union[Shift, Callable]] = (),
    **dataset_args,
):
    """Domain-incremental stream: experience ``i`` is the whole dataset under ``shifts[i]``.

    Every experience has all the classes and task label 0. Shifts are applied
    once to the tensors (see :mod:`scenarios.shifts`), so domains stay
    tensor-backed.

    Args:
        dataset: a name or a ``(train, test)`` pair of tensor-backed datasets.
        shifts: one batch transform per experience (e.g. ``Rotation(45)``).

    Example:
        >>> from scenarios.shifts import Identity, Rotation
        >>> bm = domain_incremental("digits", [Identity(), Rotation(90)])
    """
    from .datasets import TensorClassificationDataset

    if not shifts:
        raise ValueError("shifts must hold at least one shift (one per experience)")
    for i, s in enumerate(shifts):
        if not callable(s):
            raise TypeError(f"shifts[{i}] must be callable (a Shift), got {type(s).__name__}")
    train, test = load_tensor_dataset(dataset, "domain_incremental", **dataset_args)
    tr, te = [], []
    for s in shifts:
        tr.append(_av(TensorClassificationDataset(s(train.tensors[0]), train.tensors[1]), 0))
        te.append(_av(TensorClassificationDataset(s(test.tensors[0]), test.tensors[1]), 0))
    classes = sorted(set(_targets(train).tolist()))
    return _scenario(
        tr, te, kind="domain-incremental", n_classes=len(classes), input_shape=tuple(train[0][0].shape),
        n_experiences=len(shifts), shifts=list(shifts),
    )
