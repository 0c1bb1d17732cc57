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

__all__ = ["class_incremental", "task_incremental", "domain_incremental", "split_domain_incremental", "offline", "load_dataset",
           "load_tensor_dataset", "stream_info", "dataset_targets", "avalanche_dataset", "make_scenario",
           "as_classification_dataset"]


def load_dataset(dataset: Union[str, DatasetPair], **dataset_args) -> DatasetPair:
    """Resolve ``dataset`` (``"digits"``, ``"mnist1d"`` or a ``(train, test)`` pair).

    Plain ``TensorDataset(x, y)`` sets in a pair become
    :class:`~scenarios.datasets.TensorClassificationDataset` (see
    :func:`as_classification_dataset`).
    """
    from . import datasets

    if isinstance(dataset, str):
        makers = {"digits": datasets.digits, "mnist1d": datasets.mnist1d, "mnist5k": datasets.mnist5k}
        if dataset not in makers:
            raise ValueError(f"dataset must be one of {sorted(makers)} or a (train, test) pair, got {dataset!r}")
        return makers[dataset](**dataset_args)
    if not (isinstance(dataset, (tuple, list)) and len(dataset) == 2):
        raise TypeError(f"dataset must be a name or a (train, test) pair of datasets, got {type(dataset).__name__}")
    if dataset_args:
        raise TypeError(f"dataset_args {sorted(dataset_args)} only apply to a dataset given by name")
    return tuple(as_classification_dataset(ds) for ds in dataset)


def as_classification_dataset(ds: Dataset) -> Dataset:
    """``ds`` itself when it has ``targets``; a plain ``TensorDataset(x, y)`` with 1-D integer ``y`` as a
    :class:`~scenarios.datasets.TensorClassificationDataset` (targets read from the second tensor)."""
    from torch.utils.data import TensorDataset

    from .datasets import TensorClassificationDataset

    if getattr(ds, "targets", None) is not None or not isinstance(ds, TensorDataset) or len(ds.tensors) != 2:
        return ds
    y = ds.tensors[1]
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(
            f"a TensorDataset(x, y) needs 1-D integer class labels y, got y of dtype {y.dtype} and shape {tuple(y.shape)}"
        )
    return TensorClassificationDataset(ds.tensors[0], y)


def load_tensor_dataset(dataset, who: str, **dataset_args):
    """:func:`load_dataset`, requiring tensor-backed train and test sets (``who`` names the caller in the error)."""
    train, test = load_dataset(dataset, **dataset_args)
    for name, ds in (("train", train), ("test", test)):
        if not hasattr(ds, "tensors"):
            raise TypeError(f"{who} needs tensor-backed datasets; the {name} set is {type(ds).__name__}")
    return train, test


def dataset_targets(ds: Dataset) -> np.ndarray:
    """The integer class labels of ``ds``: its ``targets``, or the second tensor of a ``TensorDataset(x, y)``."""
    t = getattr(ds, "targets", None)
    if t is None:
        t = getattr(as_classification_dataset(ds), "targets", None)
    if t is None:
        raise ValueError(
            f"dataset {type(ds).__name__} has no `targets` attribute (integer class labels); wrap tensors in "
            "scenarios.datasets.TensorClassificationDataset(x, y) or a TensorDataset(x, y)"
        )
    return np.asarray(torch.as_tensor(t))


def avalanche_dataset(ds: Dataset, task_label: int, indices=None):
    """``ds`` (or its subset ``indices``) as an Avalanche classification dataset with task label ``task_label``."""
    # Avalanche 0.6 exposes the task-aware constructor only under a private name.
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_classification_dataset

    ds = as_classification_dataset(ds)
    av = _make_taskaware_classification_dataset(ds, task_labels=task_label)
    return av if indices is None else av.subset(list(map(int, indices)))


def make_scenario(train_sets, test_sets, **info):
    """An Avalanche ``CLScenario`` from lists of Avalanche datasets (one per experience), with the classes
    timeline and task labels; ``info`` items (``kind``, ``n_classes``, ...) become attributes of the result."""
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
    y_train, y_test = dataset_targets(train), dataset_targets(test)
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
        tr.append(avalanche_dataset(train, t, np.flatnonzero(np.isin(y_train, g))))
        te.append(avalanche_dataset(test, t, np.flatnonzero(np.isin(y_test, g))))
    return make_scenario(
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


def split_domain_incremental(
    dataset: Union[str, DatasetPair] = "digits",
    n_experiences: int = 5,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 0,
    **dataset_args,
):
    """Domain-incremental split (van de Ven & Tolias 2019's Domain-IL): experience ``i`` holds the
    classes of group ``i`` of a class split, relabelled by their position in the group.

    On split MNIST with 5 experiences every experience is a 2-way problem
    ("first or second digit of the pair?"): one shared head of
    ``len(classes) // n_experiences`` outputs, task label 0 everywhere, so the
    model is never told which pair it sees. ``bm.class_groups`` keeps the
    original classes of each experience.

    Args:
        dataset: a name or a ``(train, test)`` pair of tensor-backed datasets.
        n_experiences: number of experiences; must divide the number of classes.
        class_order: order in which classes are grouped (random from ``seed`` when omitted).
        seed: seed of the class order.
        **dataset_args: passed to the named dataset's loader.

    Example:
        >>> bm = split_domain_incremental("digits", n_experiences=5, seed=0)
        >>> bm.n_classes, sorted(bm.train_stream[3].classes_in_this_experience)
        (2, [0, 1])
    """
    from .datasets import TensorClassificationDataset

    train, test = load_tensor_dataset(dataset, "split_domain_incremental", **dataset_args)
    split = _class_split(train, test, n_experiences, class_order, seed, False, "class-incremental")
    groups = split.classes_per_experience
    tr, te = [], []
    for g in groups:
        for src, out in ((train, tr), (test, te)):
            x, y = src.tensors[0], src.tensors[1]
            keep = torch.from_numpy(np.flatnonzero(np.isin(y.numpy(), g)))
            local = torch.searchsorted(torch.tensor(sorted(g)), y[keep])
            order = torch.tensor([list(g).index(c) for c in sorted(g)])  # sorted index -> position in g
            out.append(avalanche_dataset(TensorClassificationDataset(x[keep], order[local]), 0))
    per = len(groups[0])
    return make_scenario(
        tr, te, kind="domain-incremental", n_classes=per, input_shape=tuple(train[0][0].shape),
        n_experiences=len(groups), classes_per_experience=[list(range(per))] * len(groups),
        class_groups=groups, class_order=split.class_order,
    )


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
        tr.append(avalanche_dataset(TensorClassificationDataset(s(train.tensors[0]), train.tensors[1]), 0))
        te.append(avalanche_dataset(TensorClassificationDataset(s(test.tensors[0]), test.tensors[1]), 0))
    classes = sorted(set(dataset_targets(train).tolist()))
    return make_scenario(
        tr, te, kind="domain-incremental", n_classes=len(classes), input_shape=tuple(train[0][0].shape),
        n_experiences=len(shifts), shifts=list(shifts),
    )


def offline(
    dataset: Union[str, DatasetPair, Dataset] = "digits",
    test: Optional[Dataset] = None,
    task_label: int = 0,
    **dataset_args,
):
    """One experience holding the whole training set: ordinary (offline) training as a stream.

    Every strategy and plugin then trains as it would on any stream, once, and
    is evaluated on the test set.

    Args:
        dataset: ``"digits"``, ``"mnist1d"``, a ``(train, test)`` pair, or a
            training set (then ``test`` is required). Plain ``TensorDataset(x,
            y)`` sets are accepted (integer labels ``y``).
        test: the test set, when ``dataset`` is a training set.
        task_label: the task label of the experience (default 0).
        **dataset_args: passed to the named dataset's loader.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> x, y = torch.randn(100, 5), torch.randint(0, 3, (100,))
        >>> bm = offline(TensorDataset(x[:80], y[:80]), test=TensorDataset(x[80:], y[80:]))
        >>> len(bm.train_stream)
        1
    """
    if isinstance(task_label, bool) or not isinstance(task_label, (int, np.integer)) or task_label < 0:
        raise ValueError(f"task_label must be a non-negative integer, got {task_label!r}")
    if isinstance(dataset, Dataset) and not isinstance(dataset, (tuple, list)):
        if test is None:
            raise TypeError("offline: give a (train, test) pair, a dataset name, or a training set with test=...")
        dataset = (dataset, test)
    elif test is not None:
        raise TypeError("offline: test= only applies when dataset is a single training set")
    train, test = load_dataset(dataset, **dataset_args)
    classes = sorted(set(dataset_targets(train).tolist()))
    return make_scenario(
        [avalanche_dataset(train, int(task_label))], [avalanche_dataset(test, int(task_label))],
        kind="offline", n_classes=len(classes), input_shape=tuple(train[0][0].shape), n_experiences=1,
        classes_per_experience=[classes],
    )
