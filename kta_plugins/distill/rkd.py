"""Relational knowledge distillation (Park et al. 2019)."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..base import check_positive, register_plugin, renamed_argument
from .base import PREVIOUS, DistillationPlugin

__all__ = ["RKDLoss", "RKD", "pairwise_distances", "triplet_angles"]


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``N x N`` Euclidean distances between the rows of ``e`` (zero diagonal, safe gradient at 0)."""
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def triplet_angles(e: torch.Tensor) -> torch.Tensor:
    """``N x N x N`` cosines ``<(e_i - e_j)/|.|, (e_k - e_j)/|.|>`` (index order ``[j, i, k]``)."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # diff[j, i] = e_i - e_j
    return torch.bmm(diff, diff.transpose(1, 2))


class RKDLoss(nn.Module):
    """Park, Kim, Lu & Cho 2019, "Relational Knowledge Distillation" (CVPR), RKD-DA.

    Transfers the structure of a batch instead of each output:

    * distance: ``psi_D(i, j) = ||e_i - e_j|| / mu``, ``mu`` the mean distance over
      pairs ``i != j``; ``L_D = mean_{i,j} huber(psi_D^s, psi_D^t)``;
    * angle: ``psi_A(i, j, k) = cos angle(e_i - e_j, e_k - e_j)``;
      ``L_A = mean_{i,j,k} huber(psi_A^s, psi_A^t)``;

    ``loss = distance_weight * L_D + angle_weight * L_A`` with ``huber`` the
    smooth L1 loss (delta 1) and the means over all ``N^2`` / ``N^3`` entries, as
    in the authors' code. Features are flattened to ``N x D``; student and
    teacher widths may differ.

    Args:
        distance_weight: ``lambda_D`` (default 25, the paper's).
        angle_weight: ``lambda_A`` (default 50, the paper's).

    Example:
        >>> loss_fn = RKDLoss(distance_weight=25.0, angle_weight=50.0)
        >>> loss = loss_fn(student_embedding, teacher_embedding.detach())
    """

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0):
        super().__init__()
        self.distance_weight = check_positive("distance_weight", distance_weight, strict=False)
        self.angle_weight = check_positive("angle_weight", angle_weight, strict=False)

    @staticmethod
    def distance_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_d = pairwise_distances(t)
            t_d = t_d / t_d[t_d > 0].mean()
        d = pairwise_distances(s)
        d = d / d[d > 0].mean()
        return F.smooth_l1_loss(d, t_d)

    @staticmethod
    def angle_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_a = triplet_angles(t)
        return F.smooth_l1_loss(triplet_angles(s), t_a)

    def forward(self, student_features, teacher_features):
        s, t = student_features.flatten(1), teacher_features.flatten(1)
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"RKD: student batch {s.shape[0]} != teacher batch {t.shape[0]}")
        if s.shape[0] < 2:
            return s.sum() * 0.0
        loss = s.new_zeros(())
        if self.distance_weight:
            loss = loss + self.distance_weight * self.distance_loss(s, t)
        if self.angle_weight:
            loss = loss + self.angle_weight * self.angle_loss(s, t)
        return loss


@register_plugin("rkd")
class RKD(DistillationPlugin):
    """Relational KD (Park et al. 2019), distance + angle, as an Avalanche plugin.

    Adds ``weight * (distance_weight * L_D + angle_weight * L_A)`` (:class:`RKDLoss`)
    to the strategy's loss, on the outputs of the student's ``student_layer``
    and the teacher's ``teacher_layer`` (read with
    :class:`~kta_plugins.nn.FeatureTap`; widths may differ).

    Args:
        teacher: an ``nn.Module``, a checkpoint path, or ``"previous"`` (default).
        student_layer: student module (default ``"features"``).
        teacher_layer: teacher module (default: ``student_layer``).
        distance_weight: ``lambda_D`` (default 25).
        angle_weight: ``lambda_A`` (default 50).
        weight: overall loss weight (default 1.0).
        beta: deprecated alias of ``weight`` (one release; warns).
        cache_teacher: look a fixed teacher's outputs up per sample instead of running it on every
            minibatch (default False; see :class:`~kta_plugins.distill.base.DistillationPlugin`).

    Example:
        >>> from kta_plugins.distill import RKD
        >>> rkd = RKD(teacher=cnn, student_layer="features", teacher_layer="features")
        >>> strategy = Naive(model=mlp, optimizer=opt, plugins=[rkd])
        >>> strategy.train(bm.train_stream[0])
        >>> # command line: kta run --plugin rkd:teacher=previous,weight=0.5
    """

    feature_layers = True

    def __init__(self, teacher: Union[str, nn.Module] = PREVIOUS, student_layer: str = "features",
                 teacher_layer: Optional[str] = None, distance_weight: float = 25.0, angle_weight: float = 50.0,
                 weight: float = 1.0, cache_teacher: bool = False, beta: Optional[float] = None):
        super().__init__(teacher, student_layer, teacher_layer, cache_teacher=cache_teacher)
        weight, name = renamed_argument(type(self).__name__, "beta", beta, "weight", weight, 1.0)
        self.weight = check_positive(name, weight, strict=False)
        self.loss_fn = RKDLoss(distance_weight=distance_weight, angle_weight=angle_weight)

    loss_term = "rkd"

    def distillation_loss(self, strategy):
        s, t = self.features(strategy)
        return self.weight * self.loss_fn(s, t)
