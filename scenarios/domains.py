"""Domain shifts for domain adaptation, source->target scenarios and streams of domains.

More shifts in the style of :mod:`scenarios.shifts` (seeded, deterministic batch
transforms applied once when a scenario is built):

* :class:`GaussianBlur` (images ``(n, C, H, W)`` or signals ``(n, C, L)``),
* :class:`Inversion` (``x -> max_value - x``),
* :class:`ToRGB` (grey -> 3 identical channels),
* :class:`ColorBackground`: MNIST-M-style domains (Ganin et al. 2016): each
  image is blended with a random colour texture, ``|texture - digit|``; the
  textures are smooth random colour fields generated offline (no BSDS500),
* MNIST-1D generator shifts: :func:`mnist1d_domain` (``shear_scale``,
  ``iid_noise_scale``, ``corr_noise_scale``, ``scale_coeff`` ... and the
  generator ``seed``).

:func:`source_target` builds the offline benchmark: a labeled source, an
unlabeled target training set and a labeled target test set, as an Avalanche
``CLScenario``; :func:`domain_stream` a domain-incremental stream whose later
domains have no labels (``-1``).

Registered scenarios: ``digits-to-digitsm``, ``digits-to-blurred``, ``digits-to-inverted``,
``mnist1d-shear``, ``mnist1d-noise``, ``domain-stream-digits``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from scenarios.registry import register_scenario
from scenarios.shifts import GaussianNoise, Identity, Rotation, Shift
from scenarios.streams import avalanche_dataset as _av, make_scenario as _scenario, dataset_targets as _targets, load_dataset, load_tensor_dataset

__all__ = [
    "GaussianBlur", "Inversion", "ToRGB", "ColorBackground", "mnist1d_domain", "source_target", "domain_stream",
    "UNLABELED",
]

#: label given to training samples of domains whose labels are absent
UNLABELED = -1


def _finite(name, value, minimum=None, strict=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return float(value)


class GaussianBlur(Shift):
    """Blur with a Gaussian kernel of standard deviation ``sigma`` (pixels / samples), zero padding.

    Works on images ``(n, C, H, W)`` and 1-D signals ``(n, C, L)``.

    Args:
        sigma: kernel standard deviation (> 0).
        radius: kernel half-width (default ``ceil(2 * sigma)``).
    """

    name = "blur"

    def __init__(self, sigma: float = 1.0, radius: Optional[int] = None):
        self.sigma = _finite("sigma", sigma, 0, strict=True)
        self.radius = int(radius) if radius is not None else max(1, math.ceil(2 * self.sigma))

    def _kernel(self, dtype):
        t = torch.arange(-self.radius, self.radius + 1, dtype=dtype)
        k = torch.exp(-t ** 2 / (2 * self.sigma ** 2))
        return k / k.sum()

    def __call__(self, x):
        if x.ndim not in (3, 4):
            raise ValueError(f"GaussianBlur needs (n, C, L) or (n, C, H, W), got shape {tuple(x.shape)}")
        k = self._kernel(x.dtype)
        c = x.shape[1]
        if x.ndim == 3:
            return F.conv1d(x, k.view(1, 1, -1).repeat(c, 1, 1), padding=self.radius, groups=c)
        k2 = torch.outer(k, k)
        return F.conv2d(x, k2.view(1, 1, *k2.shape).repeat(c, 1, 1, 1), padding=self.radius, groups=c)


class Inversion(Shift):
    """Invert intensities: ``x -> max_value - x`` (white digits on black become black on white).

    Args:
        max_value: the top of the input range (default 1.0, for inputs in [0, 1]).
    """

    name = "inversion"

    def __init__(self, max_value: float = 1.0):
        self.max_value = _finite("max_value", max_value)

    def __call__(self, x):
        return self.max_value - x


class ToRGB(Shift):
    """Grey images ``(n, 1, H, W)`` -> 3 identical channels ``(n, 3, H, W)`` (the source side of MNIST->MNIST-M)."""

    name = "rgb"

    def __call__(self, x):
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"ToRGB needs images (n, 1, H, W), got shape {tuple(x.shape)}")
        return x.repeat(1, 3 // x.shape[1], 1, 1)


class ColorBackground(Shift):
    """MNIST-M-style domain (Ganin et al. 2016): digits blended with random colour textures.

    For each image, a texture ``T`` (3 channels, values in [0, 1]) is a smooth
    random colour field: random values on a ``grid x grid`` lattice, bilinearly
    upsampled, plus fine noise of standard deviation ``grain``. The output is
    ``|T - x|`` per channel (MNIST-M's blend), so digits keep their shape but
    their colour and background change from image to image.

    Args:
        grid: lattice size of the texture (default 3; larger = busier textures).
        grain: standard deviation of the fine noise (default 0.1).
        seed: seed of the textures.
    """

    name = "color-background"

    def __init__(self, grid: int = 3, grain: float = 0.1, seed: int = 0):
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be a positive integer, got {grid!r}")
        self.grid = grid
        self.grain = _finite("grain", grain, 0)
        self.seed = int(seed)

    def __call__(self, x):
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"ColorBackground needs images (n, 1 or 3, H, W), got shape {tuple(x.shape)}")
        n, _, h, w = x.shape
        g = torch.Generator().manual_seed(self.seed)
        coarse = torch.rand(n, 3, self.grid, self.grid, generator=g, dtype=x.dtype)
        tex = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
        tex = (tex + self.grain * torch.randn(n, 3, h, w, generator=g, dtype=x.dtype)).clamp(0, 1)
        return (tex - x.repeat(1, 3 // x.shape[1], 1, 1)).abs()


def mnist1d_domain(**generator_args):
    """An MNIST-1D domain: the generator with ``generator_args`` changed, e.g.
    ``mnist1d_domain(shear_scale=2.0, seed=43)`` (``(train, test)`` datasets)."""
    from scenarios.datasets import mnist1d

    return mnist1d(**generator_args)


def _split_half(ds, seed):
    """Two disjoint, stratified halves of a tensor dataset."""
    from scenarios.datasets import TensorClassificationDataset

    y = ds.tensors[1].numpy()
    rng = np.random.default_rng(seed)
    a, b = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        a.append(idx[: len(idx) // 2])
        b.append(idx[len(idx) // 2:])
    a, b = np.sort(np.concatenate(a)), np.sort(np.concatenate(b))
    return (TensorClassificationDataset(ds.tensors[0][a], ds.tensors[1][a]),
            TensorClassificationDataset(ds.tensors[0][b], ds.tensors[1][b]))


def _hold_out(ds, fraction, seed):
    """``(kept, held_out)``: a seeded, stratified ``fraction`` of each class of a tensor dataset held out
    (at least one sample of a class with two or more; every class keeps at least one)."""
    from scenarios.datasets import TensorClassificationDataset

    y = ds.tensors[1].numpy()
    rng = np.random.default_rng([seed, 1])  # independent of the source/target split's stream
    keep, out = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
        out.append(idx[:k])
        keep.append(idx[k:])
    keep, out = np.sort(np.concatenate(keep)), np.sort(np.concatenate(out))
    return (TensorClassificationDataset(ds.tensors[0][keep], ds.tensors[1][keep]),
            TensorClassificationDataset(ds.tensors[0][out], ds.tensors[1][out]))


def _apply(shift, ds):
    from scenarios.datasets import TensorClassificationDataset

    return TensorClassificationDataset(shift(ds.tensors[0]), ds.tensors[1])


def source_target(
    source: Union[str, tuple] = "digits",
    target: Union[Shift, Callable, tuple] = None,
    source_shift: Optional[Callable] = None,
    disjoint: bool = True,
    seed: int = 0,
    val_fraction: float = 0.0,
    **dataset_args,
):
    """An offline source -> target benchmark as an Avalanche ``CLScenario``.

    Args:
        source: the source data, a name (``"digits"``, ``"mnist1d"``) or a
            ``(train, test)`` pair of tensor datasets.
        target: either a shift (applied to the source data: a synthetic target
            domain) or a ``(train, test)`` pair of another domain (e.g.
            :func:`mnist1d_domain` ``(shear_scale=2.0, seed=43)``).
        source_shift: a shift applied to the source side too (e.g.
            :class:`ToRGB` so that source and target have the same channels).
        disjoint: with a shift as target, split the training set in two
            stratified halves, source and target, so that no target training
            image is a shifted copy of a source training image (default True).
        seed: seed of that split (and of the held-out split below).
        val_fraction: when > 0, this fraction of each class of the source training set
            (seeded, stratified) is held out as ``bm.source_val`` and not trained on: labeled
            source data for label-free model selection (:mod:`kta_plugins.adapt.select`), so that
            selection never reads test data. Default 0 (``bm.source_val`` is ``None``).

    Returns:
        a ``CLScenario`` whose train stream is one experience (the labeled
        source) and whose test stream is ``[source test, target test]``, with
        attributes ``target_unlabeled`` (the target training inputs, no labels:
        what the adaptation plugins read), ``target_train`` (the same with
        labels, only for the target-oracle upper bound), ``source_train``,
        ``source_val`` (see ``val_fraction``), ``source_test``, ``target_test``, ``n_classes``,
        ``input_shape``, ``kind="source-target"``.

    Example:
        >>> bm = source_target("digits", ColorBackground(seed=1), source_shift=ToRGB())
        >>> bm.target_unlabeled.shape
        torch.Size([..., 3, 8, 8])
    """
    if target is None:
        raise ValueError("target must be a shift or a (train, test) pair of the target domain")
    val_fraction = _finite("val_fraction", val_fraction, 0)
    if val_fraction >= 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    train, test = load_tensor_dataset(source, "source_target (source)", **dataset_args)
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError("target must be a shift or a (train, test) pair of the target domain")
        t_train, t_test = target
        s_train, s_test = train, test
    elif callable(target):
        if disjoint:
            s_train, t_train = _split_half(train, seed)
        else:
            s_train, t_train = train, train
        s_test = test
        t_train, t_test = _apply(target, t_train), _apply(target, test)
    else:
        raise TypeError(f"target must be a shift or a (train, test) pair, got {type(target).__name__}")
    s_val = None
    if val_fraction > 0:
        s_train, s_val = _hold_out(s_train, val_fraction, seed)
    if source_shift is not None:
        s_train, s_test = _apply(source_shift, s_train), _apply(source_shift, s_test)
        s_val = _apply(source_shift, s_val) if s_val is not None else None
    in_s, in_t = tuple(s_train.tensors[0].shape[1:]), tuple(t_train.tensors[0].shape[1:])
    if in_s != in_t:
        raise ValueError(f"source inputs have shape {in_s} and target inputs {in_t}; pass source_shift= "
                         "(e.g. ToRGB()) so that both domains have the same input shape")
    classes = sorted(set(_targets(s_train).tolist()))
    bm = _scenario(
        [_av(s_train, 0)], [_av(s_test, 0), _av(t_test, 0)], kind="source-target", n_classes=len(classes),
        input_shape=in_s, n_experiences=1,
    )
    bm.source_train, bm.source_test, bm.source_val = s_train, s_test, s_val
    bm.target_train, bm.target_test = t_train, t_test
    bm.target_unlabeled = t_train.tensors[0]
    for stream in (bm.train_stream, bm.test_stream):
        stream.benchmark = bm  # lets plugins find target_unlabeled from experience.origin_stream
    return bm


def domain_stream(
    dataset: Union[str, tuple] = "digits",
    shifts: Sequence[Callable] = (),
    n_labeled: int = 1,
    **dataset_args,
):
    """A domain-incremental stream where only the first ``n_labeled`` domains have labels.

    Experience ``i`` trains on the dataset under ``shifts[i]``; from experience
    ``n_labeled`` on, training labels are :data:`UNLABELED` (``-1``), so only
    unsupervised alignment can use them (train with a criterion that skips
    them, e.g. :class:`kta_plugins.adapt.target.MaskedCrossEntropy`, which the
    ``domain-adaptation`` strategy uses). Test experiences keep their labels.

    Example:
        >>> bm = domain_stream("digits", [Identity(), GaussianBlur(1.0), Inversion()], n_labeled=1)
    """
    from scenarios.datasets import TensorClassificationDataset

    if not shifts:
        raise ValueError("shifts must hold at least one shift (one per experience)")
    if isinstance(n_labeled, bool) or not isinstance(n_labeled, int) or not 1 <= n_labeled <= len(shifts):
        raise ValueError(f"n_labeled must be an integer in [1, {len(shifts)}], got {n_labeled!r}")
    train, test = load_dataset(dataset, **dataset_args)
    tr, te = [], []
    for i, s in enumerate(shifts):
        y = train.tensors[1] if i < n_labeled else torch.full_like(train.tensors[1], UNLABELED)
        tr.append(_av(TensorClassificationDataset(s(train.tensors[0]), y), 0))
        te.append(_av(TensorClassificationDataset(s(test.tensors[0]), test.tensors[1]), 0))
    classes = sorted(set(_targets(train).tolist()))
    return _scenario(
        tr, te, kind="domain-incremental", n_classes=len(classes), input_shape=tuple(train[0][0].shape),
        n_experiences=len(shifts), shifts=list(shifts), n_labeled=n_labeled,
    )


# ------------------------------------------------------------------ registered scenarios
@register_scenario("digits-to-digitsm")
def digits_to_digitsm(seed: int = 0, grid: int = 3, val_fraction: float = 0.0):
    """digits (grey, as 3 channels) -> digits on random colour textures (MNIST-M style); unlabeled target."""
    return source_target("digits", ColorBackground(grid=grid, seed=1000 + seed), source_shift=ToRGB(), seed=seed,
                         val_fraction=val_fraction)


@register_scenario("digits-to-blurred")
def digits_to_blurred(seed: int = 0, sigma: float = 1.0, val_fraction: float = 0.0):
    """digits -> digits blurred with a Gaussian of sigma 1 pixel; unlabeled target."""
    return source_target("digits", GaussianBlur(sigma), seed=seed, val_fraction=val_fraction)


@register_scenario("digits-to-inverted")
def digits_to_inverted(seed: int = 0, val_fraction: float = 0.0):
    """digits -> inverted digits (1 - x); unlabeled target."""
    return source_target("digits", Inversion(), seed=seed, val_fraction=val_fraction)


@register_scenario("mnist1d-shear")
def mnist1d_shear(seed: int = 0, shear_scale: float = 2.0, target_seed: int = 43, val_fraction: float = 0.0):
    """MNIST-1D default generator -> shear_scale 2.0 (generator seed 43); unlabeled target."""
    return source_target("mnist1d", mnist1d_domain(shear_scale=shear_scale, seed=target_seed), seed=seed,
                         val_fraction=val_fraction)


@register_scenario("mnist1d-noise")
def mnist1d_noise(seed: int = 0, corr_noise_scale: float = 0.75, iid_noise_scale: float = 0.1,
                  target_seed: int = 43, val_fraction: float = 0.0):
    """MNIST-1D default generator -> stronger correlated and i.i.d. noise (generator seed 43); unlabeled target."""
    return source_target("mnist1d", mnist1d_domain(corr_noise_scale=corr_noise_scale,
                                                   iid_noise_scale=iid_noise_scale, seed=target_seed), seed=seed,
                         val_fraction=val_fraction)


@register_scenario("domain-stream-digits")
def domain_stream_digits(seed: int = 0, n_labeled: int = 1):
    """digits under 5 domains (clean, blur, noise, rotation 30, inversion); labels only in the first."""
    shifts = [Identity(), GaussianBlur(0.8), GaussianNoise(0.3, seed=seed), Rotation(30.0), Inversion()]
    return domain_stream("digits", shifts, n_labeled=n_labeled, seed=seed)
