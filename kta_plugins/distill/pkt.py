"""Probabilistic knowledge transfer (Passalis & Tefas 2018)."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from ..base import check_positive, register_plugin, renamed_argument
from .base import PREVIOUS, DistillationPlugin

__all__ = ["PKTLoss", "PKT"]


class PKTLoss(nn.Module):
    """Passalis & Tefas 2018, "Learning Deep Representations with Probabilistic Knowledge Transfer" (ECCV).

    Matches the conditional probability distributions that a cosine-similarity
    kernel induces over a batch:

    ``K(a, b) = (cos(a, b) + 1) / 2``, ``p_{i|j} = K(x_i, x_j) / sum_k K(x_k, x_j)``
    (each row normalised), and
    ``loss = mean_{i,j} p^t_{i|j} * log((p^t_{i|j} + eps) / (p^s_{i|j} + eps))``,

    the mean over all ``N^2`` entries, as in the authors' code. Features are
    flattened to ``N x D``; student and teacher widths may differ.

    Args:
        eps: numerical guard (default 1e-7).

    Example:
        >>> loss_fn = PKTLoss()
        >>> loss = loss_fn(student_features, teacher_features.detach())
    """

    def __init__(self, eps: float = 1e-7):
        super().__init__()
        self.eps = check_positive("eps", eps)

    def conditional(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        x = x / (x.norm(dim=1, keepdim=True) + self.eps)
        k = (x @ x.t() + 1.0) / 2.0
        return k / k.sum(dim=1, keepdim=True)

    def forward(self, student_features, teacher_features):
        p_s = self.conditional(student_features)
        with torch.no_grad():
            p_t = self.conditional(teacher_features)
        if p_s.shape != p_t.shape:
            raise ValueError(f"PKT: student batch {p_s.shape[0]} != teacher batch {p_t.shape[0]}")
        return (p_t * torch.log((p_t + self.eps) / (p_s + self.eps))).mean()


@register_plugin("pkt")
class PKT(DistillationPlugin):
    """Probabilistic knowledge transfer (Passalis & Tefas 2018) as an Avalanche plugin.

    Adds ``weight * PKT(s, t)`` (:class:`PKTLoss`) to the strategy's loss, on the
    outputs of the student's ``student_layer`` and the teacher's
    ``teacher_layer`` (read with :class:`~kta_plugins.nn.FeatureTap`; widths may
    differ). The loss is a mean over ``N^2`` small entries, hence a large
    default weight (3e4, RepDistiller's).

    Args:
        teacher: an ``nn.Module``, a checkpoint path, or ``"previous"`` (default).
        student_layer: student module (default ``"features"``).
        teacher_layer: teacher module (default: ``student_layer``).
        weight: the loss weight (default 30000).
        beta: deprecated alias of ``weight`` (one release; warns).
        cache_teacher: look a fixed teacher's outputs up per sample instead of running it on every
            minibatch (default False; see :class:`~kta_plugins.distill.base.DistillationPlugin`).

    Example:
        >>> from kta_plugins.distill import PKT
        >>> pkt = PKT(teacher=cnn, student_layer="features", teacher_layer="features")
        >>> strategy = Naive(model=mlp, optimizer=opt, plugins=[pkt])
        >>> strategy.train(bm.train_stream[0])
        >>> # command line: kta run --plugin pkt:teacher=previous
    """

    feature_layers = True

    def __init__(self, teacher: Union[str, nn.Module] = PREVIOUS, student_layer: str = "features",
                 teacher_layer: Optional[str] = None, weight: float = 30000.0,
                 cache_teacher: bool = False, beta: Optional[float] = None):
        super().__init__(teacher, student_layer, teacher_layer, cache_teacher=cache_teacher)
        weight, name = renamed_argument(type(self).__name__, "beta", beta, "weight", weight, 30000.0)
        self.weight = check_positive(name, weight, strict=False)
        self.loss_fn = PKTLoss()

    loss_term = "pkt"

    def distillation_loss(self, strategy):
        s, t = self.features(strategy)
        return self.weight * self.loss_fn(s, t)
