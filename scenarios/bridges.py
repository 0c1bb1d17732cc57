"""Domain bridges: a source -> target stream that crosses the gap through intermediate domains.

Gradual domain adaptation (Kumar, Ma & Liang 2020, "Understanding Self-Training for
Gradual Domain Adaptation", ICML): instead of jumping from a labeled source straight
to a shifted target, the learner sees a sequence of domains whose shift grows step by
step, so that a model that is right on domain ``k`` is still mostly right on domain
``k + 1`` (and its pseudo-labels there can be trusted).

Over ``n`` experiences, experience ``k`` (``k = 0 .. n-1``) is the ``k``-th of ``n``
disjoint, stratified chunks of the training set under the shift at strength

    s_k = k / (n - 1)          (s_0 = 0: the source, s_{n-1} = 1: the target)

where strength ``s`` means: a rotation by ``s * max_degrees``, a Gaussian blur of sigma
``s * max_sigma``, Gaussian noise of std ``s * max_std``, or, for any other shift ``T``
(e.g. :class:`scenarios.domains.Inversion`), the interpolation
``(1 - s) x + s T(x)`` (:class:`Interpolation`).

The **jump** baseline (``jump=True``) has strengths ``(0, 1, 1, ..., 1)``: the same
chunks, the same number of experiences and therefore the same training budget, but
every experience after the source is the target itself. Both variants share one test
stream, the full test set under each bridge strength ``s_k``, so their accuracy
matrices have the same columns; the last column is the target test set.

Labels: ``labels="source"`` keeps labels only on experience 0; later experiences carry
:data:`scenarios.domains.UNLABELED` (``-1``): train them with a plugin that supplies
labels (``self-training``, :mod:`kta_plugins.adapt.self_training`) or a loss that skips
them (``domain-adaptation`` strategy, ``MaskedCrossEntropy``). ``labels="all"`` is the
labeled bridge.

Registered scenario: ``bridge-digits`` (scikit-learn digits, rotation 0 -> 60 degrees,
5 experiences).

Example:
    >>> bm = bridge("digits", "rotation", n_experiences=5, max_strength=60.0, labels="source", seed=0)
    >>> bm.strengths
    [0.0, 0.25, 0.5, 0.75, 1.0]
    >>> jump = bridge("digits", "rotation", n_experiences=5, max_strength=60.0, jump=True, seed=0)
    >>> jump.strengths
    [0.0, 1.0, 1.0, 1.0, 1.0]
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch

from scenarios.domains import UNLABELED, GaussianBlur
from scenarios.registry import register_scenario
from scenarios.shifts import GaussianNoise, Identity, Rotation, Shift
from scenarios.streams import avalanche_dataset as _av, make_scenario as _scenario, dataset_targets as _targets, load_tensor_dataset

__all__ = ["Interpolation", "FAMILIES", "bridge_strengths", "bridge_shift", "bridge", "stratified_chunks"]

#: shift families and the strength that ``s = 1`` means by default
FAMILIES = {"rotation": 60.0, "blur": 2.0, "noise": 1.0}


class Interpolation(Shift):
    """``x -> (1 - s) x + s T(x)``: a point on the segment from the source to ``T``'s domain.

    ``s = 0`` gives ``x`` and ``s = 1`` gives ``T(x)`` exactly.

    Args:
        shift: the target shift ``T`` (any batch transform keeping the shape).
        strength: ``s`` in ``[0, 1]``.
    """

    name = "interpolation"

    def __init__(self, shift, strength: float):
        if not callable(shift):
            raise TypeError(f"shift must be callable (a Shift), got {type(shift).__name__}")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
        self.shift = shift
        self.strength = float(strength)

    def __call__(self, x):
        if self.strength == 0:
            return x.clone()
        t = self.shift(x)
        if self.strength == 1:
            return t
        return (1 - self.strength) * x + self.strength * t


def bridge_strengths(n_experiences: int, jump: bool = False) -> list[float]:
    """``[k / (n - 1) for k in 0..n-1]``, or ``[0, 1, ..., 1]`` for the jump baseline."""
    if isinstance(n_experiences, bool) or not isinstance(n_experiences, int) or n_experiences < 2:
        raise ValueError(f"n_experiences must be an integer >= 2 (a source and a target), got {n_experiences!r}")
    if jump:
        return [0.0] + [1.0] * (n_experiences - 1)
    return [k / (n_experiences - 1) for k in range(n_experiences)]


def bridge_shift(shift: Union[str, Shift], strength: float, max_strength: Optional[float] = None,
                 seed: int = 0) -> Shift:
    """The shift at ``strength`` in ``[0, 1]`` of a family (``"rotation"``, ``"blur"``, ``"noise"``)
    scaled to ``max_strength`` (default :data:`FAMILIES`), or :class:`Interpolation` towards a shift object.

    Strength 0 is always :class:`~scenarios.shifts.Identity` (the source).
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
    if isinstance(shift, str):
        if shift not in FAMILIES:
            raise ValueError(f"shift must be one of {sorted(FAMILIES)} or a Shift object, got {shift!r}")
        top = FAMILIES[shift] if max_strength is None else max_strength
        if isinstance(top, bool) or not isinstance(top, (int, float)) or not math.isfinite(top) or top <= 0:
            raise ValueError(f"max_strength must be a finite number > 0, got {max_strength!r}")
        if strength == 0:
            return Identity()
        value = strength * float(top)
        if shift == "rotation":
            return Rotation(value)
        if shift == "blur":
            return GaussianBlur(value)
        return GaussianNoise(value, seed=seed)
    if not callable(shift):
        raise TypeError(f"shift must be a family name or a Shift object, got {type(shift).__name__}")
    if max_strength is not None:
        raise ValueError("max_strength only applies to a shift family given by name; "
                         f"got max_strength={max_strength!r} with {shift!r}")
    return Identity() if strength == 0 else Interpolation(shift, strength)


def stratified_chunks(y, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` disjoint index arrays, each with ~``1/n`` of every class (seeded; sorted indices)."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    parts = [[] for _ in range(n)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        for k, chunk in enumerate(np.array_split(idx, n)):
            parts[k].append(chunk)
    out = [np.sort(np.concatenate(p)) for p in parts]
    if any(len(p) == 0 for p in out):
        raise ValueError(f"the dataset is too small for {n} chunks")
    return out


def bridge(
    dataset: Union[str, tuple] = "digits",
    shift: Union[str, Shift] = "rotation",
    n_experiences: int = 5,
    max_strength: Optional[float] = None,
    labels: str = "source",
    jump: bool = False,
    disjoint: bool = True,
    seed: int = 0,
    **dataset_args,
):
    """A source -> target stream through ``n_experiences - 2`` intermediate domains (or the jump baseline).

    Args:
        dataset: ``"digits"``, ``"mnist1d"`` or a ``(train, test)`` pair of tensor datasets.
        shift: a family name (``"rotation"``, ``"blur"``, ``"noise"``) or a shift object ``T``
            (then domain ``k`` is ``(1 - s_k) x + s_k T(x)``).
        n_experiences: number of domains ``n >= 2`` (source and target included).
        max_strength: what strength 1 means for a family (degrees, sigma, std); default :data:`FAMILIES`.
        labels: ``"source"`` (only experience 0 is labeled; later ones carry ``-1``) or ``"all"``.
        jump: the jump baseline: strengths ``(0, 1, ..., 1)`` (same chunks, same budget).
        disjoint: experience ``k`` uses the ``k``-th of ``n`` disjoint stratified chunks of the training
            set (default; as in Kumar et al.); ``False``: every experience uses the whole training set.
        seed: seed of the chunks and of the noise.

    Returns:
        an Avalanche ``CLScenario`` with attributes ``strengths`` (of the training experiences),
        ``test_strengths`` (the bridge's, for both variants), ``shifts``, ``test_shifts``,
        ``target_shift``, ``labels``, ``jump``, ``kind`` (``"domain-bridge"`` / ``"domain-jump"``),
        ``train_indices`` (the chunk of each experience), ``n_classes``, ``input_shape``, ``n_experiences``.
    """
    from scenarios.datasets import TensorClassificationDataset

    if labels not in ("source", "all"):
        raise ValueError(f"labels must be 'source' or 'all', got {labels!r}")
    if not isinstance(jump, bool):
        raise TypeError(f"jump must be a bool, got {jump!r}")
    test_strengths = bridge_strengths(n_experiences)
    strengths = bridge_strengths(n_experiences, jump=jump)
    # Build every shift first: a bad shift / max_strength is reported before any data is loaded.
    test_shifts = [bridge_shift(shift, s, max_strength, seed) for s in test_strengths]
    by_strength = dict(zip(test_strengths, test_shifts))
    shifts = [by_strength[s] for s in strengths]
    train, test = load_tensor_dataset(dataset, "bridge", **dataset_args)
    x, y = train.tensors[0], train.tensors[1]
    chunks = stratified_chunks(y.numpy(), n_experiences, seed) if disjoint else \
        [np.arange(len(y))] * n_experiences
    tr, te = [], []
    for k, (s, idx) in enumerate(zip(shifts, chunks)):
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        yk = y[idx_t] if (k == 0 or labels == "all") else torch.full((len(idx),), UNLABELED, dtype=torch.long)
        tr.append(_av(TensorClassificationDataset(s(x[idx_t]), yk), 0))
    for s in test_shifts:
        te.append(_av(TensorClassificationDataset(s(test.tensors[0]), test.tensors[1]), 0))
    classes = sorted(set(_targets(train).tolist()))
    return _scenario(
        tr, te, kind="domain-jump" if jump else "domain-bridge", n_classes=len(classes),
        input_shape=tuple(x.shape[1:]), n_experiences=n_experiences, strengths=strengths,
        test_strengths=test_strengths, shifts=shifts, test_shifts=test_shifts, target_shift=test_shifts[-1],
        labels=labels, jump=jump, train_indices=chunks,
    )


@register_scenario("bridge-digits")
def bridge_digits(seed: int = 0, n_experiences: int = 5, shift: str = "rotation",
                  max_strength: Optional[float] = None, labels: str = "all", jump: bool = False):
    """digits rotated 0 -> 60 degrees in n steps, labeled (domain bridge); jump=true: source, then the target.

    ``labels="source"``: only the source is labeled; ``shift="blur"`` / ``"noise"``: other families.
    """
    return bridge("digits", shift, n_experiences=n_experiences, max_strength=max_strength, labels=labels,
                  jump=jump, seed=seed)
