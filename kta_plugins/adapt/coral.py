"""Deep CORAL: correlation alignment (Sun & Saenko 2016)."""
from __future__ import annotations

from typing import Optional

import torch

from ..base import register_plugin
from .base import AlignmentPlugin
from .dann import _check_target

__all__ = ["CORAL", "coral_loss", "covariance"]


def covariance(h: torch.Tensor) -> torch.Tensor:
    """``C = 1/(n-1) (H^T H - (1^T H)^T (1^T H) / n)`` for features ``H`` of shape ``(n, d)``."""
    n = h.shape[0]
    ones = h.new_ones(1, n)
    s = ones @ h
    return (h.t() @ h - s.t() @ s / n) / (n - 1)


def coral_loss(hs: torch.Tensor, ht: torch.Tensor) -> torch.Tensor:
    """``1 / (4 d^2) * ||C_s - C_t||_F^2`` (Sun & Saenko 2016, eq. 1); 0 when a side has < 2 samples."""
    if hs.shape[1] != ht.shape[1]:
        raise ValueError(f"CORAL: source features have width {hs.shape[1]} and target features {ht.shape[1]}")
    if len(hs) < 2 or len(ht) < 2:
        return (hs.sum() + ht.sum()) * 0.0
    d = hs.shape[1]
    return ((covariance(hs) - covariance(ht)) ** 2).sum() / (4 * d * d)


@register_plugin("coral")
class CORAL(AlignmentPlugin):
    """Deep CORAL (Sun & Saenko 2016, "Deep CORAL: Correlation Alignment for Deep Domain
    Adaptation", ECCV workshops).

    Adds ``weight * 1/(4 d^2) ||C_s - C_t||_F^2`` to the loss, ``C_s`` and
    ``C_t`` the covariances of the source and target minibatch features of
    ``layer`` (width ``d``; :func:`coral_loss`). Target minibatches as in
    :class:`~kta_plugins.adapt.DANN`. Because the loss is divided by ``d^2`` it
    is tiny on narrow layers; the paper picks ``weight`` so that the CORAL and
    classification losses are about equal at the end of training (values of
    100-10000 are common for small layers).

    Args:
        target: unlabeled target inputs; default the benchmark's ``target_unlabeled``.
        layer: the feature layer (default ``"features"``).
        weight: weight of the CORAL loss (default 1.0).
        target_mb_size: target minibatch size (default: the source minibatch's).
        stream: align each new domain with a buffer of the previous ones (default False).
        buffer_size: buffer size in stream mode (default 200).
        seed: seed of the target minibatches (default 0).
        replay: stream mode: add the cross-entropy of labeled buffer samples (default True).

    Example:
        >>> from kta_plugins.adapt import CORAL
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[CORAL(weight=1000.0)])
        >>> strategy.train(bm.train_stream[0])
        >>> # command line: kta run --scenario digits-to-digitsm --plugin coral:weight=1000
    """

    technique = "CORAL"
    check_args = {"target": _check_target()}

    def __init__(self, target=None, layer: str = "features", weight: float = 1.0,
                 target_mb_size: Optional[int] = None, stream: bool = False, buffer_size: int = 200,
                 seed: int = 0, replay: bool = True):
        super().__init__(target=target, layer=layer, weight=weight, target_mb_size=target_mb_size,
                         stream=stream, buffer_size=buffer_size, seed=seed, replay=replay)

    def alignment_loss(self, hs, ht, out_s, out_t):
        return coral_loss(hs, ht)
