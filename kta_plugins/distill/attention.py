"""Attention transfer (Zagoruyko & Komodakis 2017)."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..base import check_positive, check_type, register_plugin, renamed_argument
from .base import PREVIOUS, DistillationPlugin

__all__ = ["AttentionTransferLoss", "AttentionTransfer", "attention_map"]


def _raw_map(features: torch.Tensor, p: float) -> torch.Tensor:
    if features.dim() == 2:
        return features.abs().pow(p)
    return features.abs().pow(p).mean(1).flatten(1)


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``Q = normalize(mean_c |A_c|^p)``: the activation-based spatial attention map, flattened, L2-normalised.

    ``features`` is ``N x C x ...`` (a flat ``N x D`` tensor counts as one channel over ``D`` positions).
    """
    return F.normalize(_raw_map(features, p), dim=1)


class AttentionTransferLoss(nn.Module):
    """Zagoruyko & Komodakis 2017, "Paying More Attention to Attention" (ICLR), activation-based AT.

    ``loss = mean((Q_s - Q_t)^2)`` with ``Q = normalize(mean_c |A_c|^p)`` the
    flattened, L2-normalised attention map of a feature tensor ``A`` (the
    authors' code, ``at_loss``); the plugin multiplies it by ``weight / 2``.
    Student and teacher maps must have the same number of positions; with
    ``resize=True`` the larger map is average-pooled to the smaller one's size
    first (an extension: the paper pairs layers of equal resolution).

    Args:
        p: the power of the activations (default 2).
        resize: pool maps of different sizes to the smaller size (default False).

    Example:
        >>> loss_fn = AttentionTransferLoss(p=2)
        >>> loss = 1000 / 2 * loss_fn(student_block3_out, teacher_block3_out.detach())
    """

    def __init__(self, p: float = 2.0, resize: bool = False):
        super().__init__()
        self.p = check_positive("p", p)
        self.resize = check_type("resize", resize, bool)

    def forward(self, student_features, teacher_features, names=("student", "teacher")):
        q_s, q_t = _raw_map(student_features, self.p), _raw_map(teacher_features, self.p)
        if q_s.shape != q_t.shape:
            if not self.resize or q_s.shape[0] != q_t.shape[0]:
                raise ValueError(
                    f"attention transfer: student layer {names[0]!r} (features {tuple(student_features.shape)}) "
                    f"and teacher layer {names[1]!r} (features {tuple(teacher_features.shape)}) give attention "
                    f"maps of {q_s.shape[1]} and {q_t.shape[1]} positions; pair layers of equal resolution "
                    "or pass resize=True"
                )
            n = min(q_s.shape[1], q_t.shape[1])
            q_s = F.adaptive_avg_pool1d(q_s.unsqueeze(1), n).squeeze(1)
            q_t = F.adaptive_avg_pool1d(q_t.unsqueeze(1), n).squeeze(1)
        q_s, q_t = F.normalize(q_s, dim=1), F.normalize(q_t, dim=1)
        return (q_s - q_t).pow(2).mean()


@register_plugin("attention")
class AttentionTransfer(DistillationPlugin):
    """Attention transfer (Zagoruyko & Komodakis 2017) as an Avalanche plugin.

    Adds ``weight / 2 * mean((Q_s - Q_t)^2)`` (:class:`AttentionTransferLoss`) to
    the strategy's loss; ``Q`` the attention maps of the student's
    ``student_layer`` and the teacher's ``teacher_layer`` outputs, read with
    :class:`~kta_plugins.nn.FeatureTap`. Channels may differ; positions must match
    (or ``resize=True``), else a ``ValueError`` names both layers before any update.

    Args:
        teacher: an ``nn.Module``, a checkpoint path, or ``"previous"`` (default).
        student_layer: student module (default ``"features"``).
        teacher_layer: teacher module (default: ``student_layer``).
        weight: the loss weight, the paper's beta (default 1000, the paper's).
        beta: deprecated alias of ``weight`` (one release; warns).
        p: activation power (default 2).
        resize: pool maps of different sizes to the smaller one (default False).
        cache_teacher: look a fixed teacher's outputs up per sample instead of running it on every
            minibatch (default False; see :class:`~kta_plugins.distill.base.DistillationPlugin`).

    Example:
        >>> from kta_plugins.distill import AttentionTransfer
        >>> at = AttentionTransfer(teacher=big_cnn, student_layer="features.3", teacher_layer="features.6")
        >>> strategy = Naive(model=small_cnn, optimizer=opt, plugins=[at])
        >>> strategy.train(bm.train_stream[0])
        >>> # command line: kta run --plugin attention:teacher=previous,student_layer=features.1
    """

    feature_layers = True

    def __init__(self, teacher: Union[str, nn.Module] = PREVIOUS, student_layer: str = "features",
                 teacher_layer: Optional[str] = None, weight: float = 1000.0, p: float = 2.0, resize: bool = False,
                 cache_teacher: bool = False, beta: Optional[float] = None):
        super().__init__(teacher, student_layer, teacher_layer, cache_teacher=cache_teacher)
        weight, name = renamed_argument(type(self).__name__, "beta", beta, "weight", weight, 1000.0)
        self.weight = check_positive(name, weight, strict=False)
        self.loss_fn = AttentionTransferLoss(p=p, resize=resize)

    loss_term = "attention"

    def distillation_loss(self, strategy):
        s, t = self.features(strategy)
        return self.weight / 2 * self.loss_fn(s, t, names=(self.student_layer, self.teacher_layer))
