"""Decoupled knowledge distillation (Zhao et al. 2022)."""
from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from ..base import check_int, check_positive, register_plugin
from .base import PREVIOUS, DistillationPlugin

__all__ = ["DKDLoss", "DKD"]


def _kl(p_log_teacher, p_log_student):
    """Row-wise KL(p_t || p_s) from log-probabilities, entries with p_t = 0 contributing 0."""
    p_t = p_log_teacher.exp()
    return torch.where(p_t > 0, p_t * (p_log_teacher - p_log_student), torch.zeros_like(p_t)).sum(1)


class DKDLoss(nn.Module):
    """Zhao, Cui, Song, Qiu & Liang 2022, "Decoupled Knowledge Distillation" (CVPR).

    KD split into a target-class term and a non-target-class term, weighted apart:

    ``DKD = alpha * TCKD + beta * NCKD``, with, at temperature ``T`` and target ``y``,

    * ``TCKD = T^2 * KL(b_t || b_s)``, ``b = [p_y, 1 - p_y]`` the binary
      target / rest probabilities of ``softmax(z / T)``;
    * ``NCKD = T^2 * KL(q_t || q_s)``, ``q = softmax`` of the non-target logits ``z_{k != y} / T``;

    both averaged over the batch. A row whose target is ``-1`` (a class the
    teacher does not know) has no target class: its TCKD is 0 and its NCKD is
    the KL over all classes. The cross-entropy of the paper's total loss is the
    strategy's criterion (the plugin adds ``DKD`` to it).

    Args:
        alpha: weight of TCKD (default 1.0).
        beta: weight of NCKD (default 8.0).
        temperature: ``T`` (default 4.0).

    Example:
        >>> loss_fn = DKDLoss(alpha=1.0, beta=8.0, temperature=4.0)
        >>> loss = F.cross_entropy(s, y) + loss_fn(s, t.detach(), y)
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0):
        super().__init__()
        self.alpha = check_positive("alpha", alpha, strict=False)
        self.beta = check_positive("beta", beta, strict=False)
        self.temperature = check_positive("temperature", temperature)

    def parts(self, student_logits, teacher_logits, targets):
        """``(TCKD, NCKD)``, each ``T^2``-scaled and averaged over the batch."""
        T = self.temperature
        s, t = student_logits / T, teacher_logits / T
        n = s.shape[0]
        known = targets >= 0
        gt = torch.zeros_like(s, dtype=torch.bool)
        gt[known.nonzero(as_tuple=True)[0], targets[known]] = True
        # TCKD: binary distributions [p_target, 1 - p_target]
        if known.any():
            rows = known.nonzero(as_tuple=True)[0]
            def binary(z):  # log [p_target, 1 - p_target], the rest as a log-sum-exp (no 1 - p cancellation)
                z, g = z[rows], gt[rows]
                lse = z.logsumexp(1)
                return torch.stack([z[g] - lse, z.masked_fill(g, float("-inf")).logsumexp(1) - lse], 1)
            tckd = _kl(binary(t), binary(s)).sum() / n
        else:
            tckd = s.new_zeros(())
        # NCKD: softmax over the non-target logits (the target logit pushed to -1000, as in the authors' code)
        q_s = F.log_softmax(s - 1000.0 * gt, 1)
        q_t = F.log_softmax(t - 1000.0 * gt, 1)
        nckd = _kl(q_t, q_s).sum() / n
        return tckd * T * T, nckd * T * T

    def forward(self, student_logits, teacher_logits, targets):
        tckd, nckd = self.parts(student_logits, teacher_logits, targets)
        return self.alpha * tckd + self.beta * nckd


@register_plugin("dkd")
class DKD(DistillationPlugin):
    """Decoupled KD (Zhao et al. 2022) from a teacher, as an Avalanche plugin.

    Adds ``alpha * TCKD + beta * NCKD`` (:class:`DKDLoss`) to the strategy's loss
    (the cross-entropy stays), on the classes the teacher knows; samples of a
    class the teacher never saw (new classes with ``teacher="previous"``) only
    contribute their non-target term.

    Args:
        teacher: an ``nn.Module``, a checkpoint path, or ``"previous"`` (default).
        alpha: TCKD weight (default 1.0).
        beta: NCKD weight (default 8.0).
        temperature: ``T`` (default 4.0).
        warmup_epochs: ramp the DKD weight linearly over this many training
            epochs, ``min(epoch / warmup_epochs, 1)`` with epochs counted from 1
            (the authors' schedule, 20 on CIFAR-100; default 0: no ramp). Only
            epochs that distil count: with ``teacher="previous"`` the first
            experience has no teacher.
        cache_teacher: look a fixed teacher's outputs up per sample instead of running it on every
            minibatch (default False; see :class:`~kta_plugins.distill.base.DistillationPlugin`).

    Example:
        >>> from kta_plugins.distill import DKD
        >>> strategy = Naive(model=student, optimizer=opt, plugins=[DKD(teacher=cnn, beta=8.0)])
        >>> strategy.train(bm.train_stream[0])
        >>> # command line: kta run --plugin dkd:teacher=previous
    """

    def __init__(self, teacher: Union[str, nn.Module] = PREVIOUS, alpha: float = 1.0, beta: float = 8.0,
                 temperature: float = 4.0, warmup_epochs: int = 0, cache_teacher: bool = False):
        super().__init__(teacher, cache_teacher=cache_teacher)
        self.loss_fn = DKDLoss(alpha=alpha, beta=beta, temperature=temperature)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, minimum=0)
        self.epochs_seen = 0

    state_attrs = ("teacher", "teacher_classes", "epochs_seen")

    loss_term = "dkd"

    def after_training_epoch(self, strategy, **kwargs):
        if self.teacher is not None:  # the ramp starts with distillation (teacher="previous": experience 2)
            self.epochs_seen += 1

    def distillation_loss(self, strategy):
        total = 0.0
        for s, t, cols in self.logit_pairs(strategy):
            total = total + self.loss_fn(s, t, self.remap_targets(strategy.mb_y, cols))
        if self.warmup_epochs:
            total = total * min((self.epochs_seen + 1) / self.warmup_epochs, 1.0)
        return total
