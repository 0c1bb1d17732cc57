"""Concept-drift streams: ``P(y | x)`` changes between experiences, ``P(x)`` does not.

A *real* concept drift (Gama et al. 2014, "A survey on concept drift adaptation", ACM
Computing Surveys) changes the labelling function itself, not only the inputs. Here
the change is a label remapping on ``n_remapped`` classes ``C = (c_0, ..., c_{m-1})``
(drawn with ``seed``): the cyclic permutation

    pi(c_i) = c_{(i + 1) mod m}      (every class of C changes; the others keep their label)

Concept ``k`` relabels a fraction ``f_k`` of the samples of each class of ``C`` with
``pi``:

* ``drift="sudden"``: ``f_k = 0`` for ``k < start`` and ``1`` from experience ``start`` on;
* ``drift="gradual"``: ``f_k = k / (n - 1)`` (0 at the first experience, 1 at the last).

Which samples are relabelled is fixed by a seeded random order of the samples of each
class: under concept ``k`` the first ``floor(f_k * n_c + 0.5)`` samples of class ``c`` in
that order are remapped, so the remapped sets are nested (a sample once remapped stays
remapped) and the fraction is exact up to rounding.

Experience ``k`` trains on the ``k``-th of ``n`` disjoint stratified chunks of the
training set, labelled under concept ``k``. Test experience ``k`` is the *whole* test
set labelled under concept ``k``: the same inputs in every test experience, only the
labels differ, so accuracy matrix entry ``A[i, j]`` is "the model after experience ``i``
judged by concept ``j``". :mod:`strategies.drift` splits the accuracy lost on old
concepts into forgetting (inputs whose label did not change) and drift (inputs whose
label changed).

Registered scenario: ``drift-digits`` (scikit-learn digits, 5 experiences, 4 remapped
classes, sudden drift at experience 2).

Example:
    >>> bm = drift_stream("digits", n_experiences=5, drift="gradual", n_remapped=4, seed=0)
    >>> bm.fractions
    [0.0, 0.25, 0.5, 0.75, 1.0]
    >>> bm.mapping            # e.g. {7: 2, 2: 9, 9: 0, 0: 7}
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from scenarios.bridges import stratified_chunks
from scenarios.registry import register_scenario
from scenarios.streams import avalanche_dataset as _av, make_scenario as _scenario, dataset_targets as _targets, load_tensor_dataset

__all__ = ["drift_fractions", "remap_classes", "relabel", "drift_stream"]


def drift_fractions(n_experiences: int, drift: str = "sudden", start: Optional[int] = None) -> list[float]:
    """The fraction ``f_k`` of remapped samples of the drifting classes under each concept ``k``."""
    if isinstance(n_experiences, bool) or not isinstance(n_experiences, int) or n_experiences < 2:
        raise ValueError(f"n_experiences must be an integer >= 2, got {n_experiences!r}")
    if drift == "sudden":
        if start is None:
            start = n_experiences // 2
        if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= n_experiences - 1:
            raise ValueError(f"start must be an integer in [1, {n_experiences - 1}], got {start!r}")
        return [0.0] * start + [1.0] * (n_experiences - start)
    if drift == "gradual":
        if start is not None:
            raise ValueError(f"start only applies to drift='sudden', got start={start!r} with drift='gradual'")
        return [k / (n_experiences - 1) for k in range(n_experiences)]
    raise ValueError(f"drift must be 'sudden' or 'gradual', got {drift!r}")


def remap_classes(classes, n_remapped: int, seed: int = 0) -> dict[int, int]:
    """A seeded cyclic permutation of ``n_remapped`` of ``classes``: ``{c_i: c_(i+1 mod m)}``."""
    classes = sorted(int(c) for c in classes)
    if isinstance(n_remapped, bool) or not isinstance(n_remapped, int) or not 2 <= n_remapped <= len(classes):
        raise ValueError(f"n_remapped must be an integer in [2, {len(classes)}] (a permutation needs two "
                         f"classes), got {n_remapped!r}")
    rng = np.random.default_rng(seed)
    chosen = [classes[i] for i in rng.choice(len(classes), n_remapped, replace=False)]
    return {c: chosen[(i + 1) % n_remapped] for i, c in enumerate(chosen)}


def _orders(y: np.ndarray, seed: int) -> np.ndarray:
    """rank[i] = position of sample ``i`` in a seeded random order of the samples of its class."""
    rank = np.empty(len(y), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rank[idx[rng.permutation(len(idx))]] = np.arange(len(idx))
    return rank


def relabel(y, mapping: dict, fraction: float, rank) -> torch.Tensor:
    """Labels ``y`` with the first ``floor(fraction * n_c + 0.5)`` samples (by ``rank``) of each class
    ``c`` in ``mapping`` sent to ``mapping[c]``."""
    y = torch.as_tensor(y, dtype=torch.long)
    rank = np.asarray(rank)
    out = y.clone()
    yn = y.numpy()
    for c, new in mapping.items():
        members = yn == c
        n_c = int(members.sum())
        k = int(np.floor(fraction * n_c + 0.5))
        sel = np.flatnonzero(members & (rank < k))
        out[torch.as_tensor(sel, dtype=torch.long)] = int(new)
    return out


def drift_stream(
    dataset: Union[str, tuple] = "digits",
    n_experiences: int = 5,
    drift: str = "sudden",
    n_remapped: int = 4,
    start: Optional[int] = None,
    seed: int = 0,
    **dataset_args,
):
    """A stream whose labelling function drifts (see the module docstring).

    Args:
        dataset: ``"digits"``, ``"mnist1d"`` or a ``(train, test)`` pair of tensor datasets.
        n_experiences: number of experiences (>= 2).
        drift: ``"sudden"`` or ``"gradual"``.
        n_remapped: number of classes whose label is permuted (>= 2).
        start: sudden drift: first experience of the new concept (default ``n // 2``).
        seed: seed of the remapped classes, of the chunks and of the order in which samples drift.

    Returns:
        an Avalanche ``CLScenario`` (task label 0) with attributes ``mapping``, ``fractions``,
        ``drift``, ``test_inputs`` (the shared test inputs), ``test_labels`` (``(n, n_test)``: the
        labels of the test inputs under each concept), ``train_indices``, ``kind="concept-drift"``,
        ``n_classes``, ``input_shape``, ``n_experiences``.
    """
    from scenarios.datasets import TensorClassificationDataset

    fractions = drift_fractions(n_experiences, drift, start)
    train, test = load_tensor_dataset(dataset, "drift_stream", **dataset_args)
    classes = sorted(set(_targets(train).tolist()))
    mapping = remap_classes(classes, n_remapped, seed)
    x, y = train.tensors[0], train.tensors[1]
    chunks = stratified_chunks(y.numpy(), n_experiences, seed)
    tr = []
    for k, idx in enumerate(chunks):
        yk = y[torch.as_tensor(idx)]
        rank = _orders(yk.numpy(), seed + 1 + k)
        xk = x[torch.as_tensor(idx)]
        tr.append(_av(TensorClassificationDataset(xk, relabel(yk, mapping, fractions[k], rank)), 0))
    xt, yt = test.tensors[0], test.tensors[1]
    test_rank = _orders(yt.numpy(), seed + 10_000)
    test_labels = torch.stack([relabel(yt, mapping, f, test_rank) for f in fractions])
    te = [_av(TensorClassificationDataset(xt, test_labels[k]), 0) for k in range(n_experiences)]
    return _scenario(
        tr, te, kind="concept-drift", n_classes=len(classes), input_shape=tuple(x.shape[1:]),
        n_experiences=n_experiences, mapping=mapping, fractions=fractions, drift=drift,
        test_inputs=xt, test_labels=test_labels, train_indices=chunks,
    )


@register_scenario("drift-digits")
def drift_digits(seed: int = 0, n_experiences: int = 5, drift: str = "sudden", n_remapped: int = 4,
                 start: Optional[int] = None):
    """digits, 5 experiences; 4 classes' labels permuted (sudden from exp 2, or gradual) (concept drift)."""
    return drift_stream("digits", n_experiences=n_experiences, drift=drift, n_remapped=n_remapped, start=start,
                        seed=seed)
