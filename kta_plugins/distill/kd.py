"""Logit knowledge distillation (Hinton, Vinyals & Dean 2015)."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..base import check_positive, check_range, register_plugin
from ..compose import CRITERION, add_loss_term, scale_loss_term
from .base import PREVIOUS, DistillationPlugin

__all__ = ["KDLoss", "KD"]


class KDLoss(nn.Module):
    """Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".

    ``loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)``

    with the KL divergence averaged over the batch (``batchmean``). The ``T^2``
    factor keeps the soft term's gradients at the scale of the hard term's when
    ``T`` changes. Without targets only the soft term ``alpha * T^2 * KL`` is returned.

    Args:
        temperature: softmax temperature ``T`` (default 4.0).
        alpha: weight of the soft term, in ``[0, 1]`` (default 0.9).

    Example:
        >>> loss_fn = KDLoss(temperature=4.0, alpha=0.9)
        >>> loss = loss_fn(student(x), teacher(x).detach(), y)
        >>> loss.backward()
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)

    def soft_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """``T^2 * KL(softmax(t / T) || softmax(s / T))``, averaged over the batch."""
        T = self.temperature
        return F.kl_div(
            F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
            reduction="batchmean", log_target=True,
        ) * T * T

    def forward(self, student_logits, teacher_logits, targets: Optional[torch.Tensor] = None):
        soft = self.alpha * self.soft_loss(student_logits, teacher_logits)
        if targets is None:
            return soft
        return soft + (1 - self.alpha) * F.cross_entropy(student_logits, targets)


@register_plugin("kd")
class KD(DistillationPlugin):
    """Logit distillation (Hinton et al. 2015) from a teacher, as an Avalanche plugin.

    Replaces the strategy's criterion term ``CE`` by
    ``(1 - alpha) * CE + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))``
    (:class:`KDLoss`) through the loss ledger: the criterion's weight is multiplied
    by ``1 - alpha`` and the term ``kd`` is added with weight ``alpha``; other
    plugins' terms are left as they are (two KD plugins give the criterion
    ``(1 - alpha_1)(1 - alpha_2)``, never a negative weight).
    The KL runs over the classes the teacher knows (see
    :mod:`kta_plugins.distill.base`: growing heads, multi-head models, ``"previous"``).

    Args:
        teacher: an ``nn.Module``, a checkpoint path, or ``"previous"`` (the
            student at the end of the previous experience; default).
        temperature: ``T`` (default 4.0).
        alpha: weight of the soft term in ``[0, 1]`` (default 0.9).
        cache_teacher: look a fixed teacher's outputs up per sample instead of running it on every
            minibatch (default False; see :class:`~kta_plugins.distill.base.DistillationPlugin`).

    Example:
        >>> from kta_plugins.distill import KD
        >>> kd = KD(teacher=trained_cnn, temperature=4.0, alpha=0.9)
        >>> strategy = Naive(model=student, optimizer=opt, plugins=[kd])
        >>> strategy.train(bm.train_stream[0])
        >>> # command line: kta run --plugin kd:teacher=previous,temperature=2
    """

    def __init__(self, teacher: Union[str, nn.Module] = PREVIOUS, temperature: float = 4.0, alpha: float = 0.9,
                 cache_teacher: bool = False):
        super().__init__(teacher, cache_teacher=cache_teacher)
        self.loss_fn = KDLoss(temperature=temperature, alpha=alpha)
        self.temperature, self.alpha = temperature, alpha

    loss_term = "kd"

    def distillation_loss(self, strategy):
        """``T^2 KL`` summed over the heads the teacher knows (``None`` when there are none)."""
        pairs = self.logit_pairs(strategy)
        if not pairs:
            return None
        return sum(self.loss_fn.soft_loss(s, t) for s, t, _ in pairs)

    def before_backward(self, strategy, **kwargs):
        if self.teacher is None:
            return  # teacher="previous" during the first experience
        soft = self.distillation_loss(strategy)
        if soft is None:
            return
        # (1 - alpha) * CE + alpha * T^2 KL through the ledger: the criterion term is re-weighted
        # (several re-weighting plugins multiply their factors), never subtracted.
        scale_loss_term(strategy, CRITERION, 1.0 - self.alpha, owner=self)
        add_loss_term(strategy, self.loss_term, soft, weight=self.alpha, owner=self)
