"""Multi-kernel MMD (DAN, Long et al. 2015)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..base import check_int, check_positive, register_plugin
from .base import AlignmentPlugin
from .guards import GuardedPlugin
from .dann import example_target as _check_target

__all__ = ["MMD", "mmd_loss", "gaussian_kernel_sum", "bandwidths_for"]


def bandwidths_for(hs: torch.Tensor, ht: torch.Tensor, kernel_mul: float = 2.0, kernel_num: int = 5) -> list:
    """DAN's bandwidth family: ``b * kernel_mul ** (i - kernel_num // 2)``, ``i = 0..kernel_num-1``, where
    ``b`` is the mean squared distance between distinct points of the joint sample (detached)."""
    z = torch.cat([hs, ht]).detach()
    n = len(z)
    d2 = torch.cdist(z, z) ** 2
    base = float(d2.sum() / max(n * n - n, 1))
    base = base if base > 0 else 1.0
    return [base * kernel_mul ** (i - kernel_num // 2) for i in range(kernel_num)]


def gaussian_kernel_sum(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    """``k(x, y) = sum_u exp(-||x - y||^2 / b_u)`` for every pair (a ``len(x) x len(y)`` matrix)."""
    d2 = ((x.unsqueeze(1) - y.unsqueeze(0)) ** 2).sum(-1)
    return sum(torch.exp(-d2 / b) for b in bandwidths)


def mmd_loss(hs: torch.Tensor, ht: torch.Tensor, kernel_mul: float = 2.0, kernel_num: int = 5,
             bandwidths: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Biased multi-kernel MMD^2: ``mean k(s, s') + mean k(t, t') - 2 mean k(s, t)``.

    ``bandwidths`` fixed, or DAN's family around the mean squared distance (:func:`bandwidths_for`).
    """
    if hs.shape[1] != ht.shape[1]:
        raise ValueError(f"MMD: source features have width {hs.shape[1]} and target features {ht.shape[1]}")
    if bandwidths is None:
        bandwidths = bandwidths_for(hs, ht, kernel_mul, kernel_num)
    return (gaussian_kernel_sum(hs, hs, bandwidths).mean() + gaussian_kernel_sum(ht, ht, bandwidths).mean()
            - 2 * gaussian_kernel_sum(hs, ht, bandwidths).mean())


@register_plugin("mmd")
class MMD(GuardedPlugin, AlignmentPlugin):
    """Deep adaptation network's multi-kernel MMD (Long et al. 2015, "Learning Transferable
    Features with Deep Adaptation Networks", ICML).

    Adds ``ramp(p) * weight * MMD_k^2(h_s, h_t)`` to the loss, the biased estimate
    ``mean k(s, s') + mean k(t, t') - 2 mean k(s, t)`` over the source and
    target minibatch features of ``layer`` (:func:`mmd_loss`), with the
    multi-kernel ``k = 1/U sum_u exp(-||x - y||^2 / b_u)``, ``b_u = b * kernel_mul **
    (u - kernel_num // 2)`` and ``b`` the mean squared pairwise distance of the
    joint minibatch (equal kernel weights instead of DAN's learned ``beta``; the
    mean over the ``U = kernel_num`` kernels keeps ``MMD^2`` in [0, 2] whatever
    ``kernel_num``). ``ramp(p) = 2 / (1 + exp(-gamma p)) - 1`` is Ganin's warm-up
    over the training progress ``p`` (``warmup=False``: 1). Because the bandwidths
    follow the features' scale, the loss cannot be lowered by shrinking them; it can
    by collapsing them to constants, which the ``feature-variance`` guard reports.

    Args:
        target: unlabeled target inputs; default the benchmark's ``target_unlabeled``.
        layer: the feature layer (default ``"features"``).
        weight: weight of the MMD loss (default 0.3: the best mean rank by the label-free DEV criterion
            over the DA benchmark suite, among 0.3 / 1 / 3; docs/domain_adaptation.md).
        kernel_mul: ratio between consecutive bandwidths (default 2.0).
        kernel_num: number of Gaussian kernels (default 5).
        warmup: Ganin's ramp on the weight (default True).
        gamma: steepness of the ramp (default 10.0).
        schedule_steps: updates over which ``p`` goes 0 -> 1 (default: the experience's).
        guards: ``"warn"`` (default), ``"error"`` or ``"off"`` (:mod:`kta_plugins.adapt.guards`).
        target_mb_size: target minibatch size (default: the source minibatch's).
        stream: align each new domain with a buffer of the previous ones (default False).
        buffer_size: buffer size in stream mode (default 200).
        seed: seed of the target minibatches (default 0).
        replay: stream mode: add the cross-entropy of labeled buffer samples (default True).

    Example:
        >>> from kta_plugins.adapt import MMD
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[MMD()])
        >>> # command line: kta run --scenario mnist1d-shear --plugin mmd
    """

    technique = "MMD"
    state_attrs = AlignmentPlugin.state_attrs + ("guard_events",)
    check_args = {"target": _check_target()}
    guard_advice = {"feature-variance": "lower weight", "source-accuracy": "lower weight",
                    "target-collapse": "lower weight, or pick it with kta_plugins.adapt.select"}

    def __init__(self, target=None, layer: str = "features", weight: float = 0.3, kernel_mul: float = 2.0,
                 kernel_num: int = 5, warmup: bool = True, gamma: float = 10.0,
                 schedule_steps: Optional[int] = None, guards: str = "warn", target_mb_size: Optional[int] = None,
                 stream: bool = False, buffer_size: int = 200, seed: int = 0, replay: bool = True):
        super().__init__(target=target, layer=layer, weight=weight, target_mb_size=target_mb_size,
                         stream=stream, buffer_size=buffer_size, seed=seed, replay=replay)
        self.kernel_mul = check_positive("kernel_mul", kernel_mul)
        if self.kernel_mul <= 1:
            raise ValueError(f"kernel_mul must be > 1, got {kernel_mul!r}")
        self.kernel_num = check_int("kernel_num", kernel_num, 1)
        self._init_warmup(warmup, gamma, schedule_steps)
        self._init_guards(guards)

    def alignment_loss(self, hs, ht, out_s, out_t):
        self._guard_features = hs.detach()
        self._guard_target_logits = None if out_t is None else out_t.detach()
        return self.ramp() * mmd_loss(hs, ht, self.kernel_mul, self.kernel_num) / self.kernel_num
