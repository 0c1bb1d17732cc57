"""FitNets hints (Romero et al. 2015)."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..base import check_positive, check_type, register_plugin, renamed_argument
from ..compose import assemble_optimizer, ensure_optimizer
from .base import PREVIOUS, DistillationPlugin

__all__ = ["FitNetsLoss", "FitNets", "make_regressor"]


def make_regressor(student_shape, teacher_shape, student_layer="student", teacher_layer="teacher") -> nn.Module:
    """The hint regressor mapping student features (``N x C_s x ...``) to the teacher's (``N x C_t x ...``).

    A ``Linear`` for flat features, a 1x1 convolution for 1-D / 2-D maps.
    Spatial sizes must be equal; otherwise a ``ValueError`` names both layers.
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) != len(t) or s[2:] != t[2:] or len(s) not in (2, 3, 4):
        raise ValueError(
            f"FitNets: student layer {student_layer!r} gives features of shape {s} and teacher layer "
            f"{teacher_layer!r} gives {t}; they must agree on everything but the channel/width dimension"
        )
    c_s, c_t = s[1], t[1]
    if len(s) == 2:
        return nn.Linear(c_s, c_t)
    return (nn.Conv1d if len(s) == 3 else nn.Conv2d)(c_s, c_t, kernel_size=1)


class FitNetsLoss(nn.Module):
    """Romero et al. 2015, "FitNets: Hints for Thin Deep Nets" (ICLR), the hint loss.

    ``loss = mean((r(s) - t)^2)``: the mean squared error between the teacher's
    hint ``t`` and the student's guided layer ``s`` mapped by a learned regressor
    ``r`` (the paper's ``1/2 ||u_h - r(v_g)||^2`` up to the normalisation).
    ``r`` is the identity when the widths agree and ``regressor`` is ``None``.

    Args:
        regressor: a module mapping student to teacher features, or ``None``
            (widths must agree). Build one with :func:`make_regressor`.

    Example:
        >>> loss_fn = FitNetsLoss(make_regressor((1, 64), (1, 125)))
        >>> opt = torch.optim.SGD([*student.parameters(), *loss_fn.parameters()], lr=0.05)
        >>> loss = loss_fn(h_student, h_teacher.detach())
    """

    def __init__(self, regressor: Optional[nn.Module] = None):
        super().__init__()
        self.regressor = check_type("regressor", regressor, nn.Module, allow_none=True)

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        s = student_features if self.regressor is None else self.regressor(student_features)
        if s.shape != teacher_features.shape:
            raise ValueError(
                f"FitNets: student features {tuple(s.shape)} (after the regressor) and teacher features "
                f"{tuple(teacher_features.shape)} differ"
            )
        return F.mse_loss(s, teacher_features)


@register_plugin("fitnets")
class FitNets(DistillationPlugin):
    """FitNets hint training (Romero et al. 2015) as an Avalanche plugin.

    Adds ``weight * mean((r(s) - t)^2)`` (:class:`FitNetsLoss`) to the strategy's
    loss, ``s`` the output of the student's ``student_layer``, ``t`` the
    teacher's ``teacher_layer``, both read with :class:`~kta_plugins.nn.FeatureTap`.
    When the widths differ, the regressor ``r`` (``Linear`` or 1x1 conv) is
    created at the first training step and added to ``strategy.optimizer`` as its
    own parameter group (learning rate ``regressor_lr``, default the
    optimizer's); it lives on the plugin (``state_attrs``), never in the student.
    Shapes that no regressor can map raise a ``ValueError`` naming both layers
    before any update. Unlike the paper's two-stage schedule, hints and the task
    loss are trained together.

    Args:
        teacher: an ``nn.Module``, a checkpoint path, or ``"previous"`` (default).
        student_layer: the guided layer (default ``"features"``).
        teacher_layer: the hint layer (default: ``student_layer``).
        weight: weight of the hint loss (default 1.0; the paper's beta).
        beta: deprecated alias of ``weight`` (one release; warns).
        regressor: learn a regressor when widths differ (default True); with
            False, different widths are an error.
        regressor_lr: learning rate of the regressor (default: the optimizer's).
        cache_teacher: look a fixed teacher's outputs up per sample instead of running it on every
            minibatch (default False; see :class:`~kta_plugins.distill.base.DistillationPlugin`).

    Example:
        >>> from kta_plugins.distill import FitNets
        >>> hint = FitNets(teacher=cnn, student_layer="features", teacher_layer="features", weight=1.0)
        >>> strategy = Naive(model=mlp, optimizer=opt, plugins=[hint])
        >>> strategy.train(bm.train_stream[0])
        >>> # command line: kta run --plugin fitnets:teacher=previous,weight=0.5
    """

    state_attrs = ("teacher", "teacher_classes", "regressor")
    feature_layers = True

    def __init__(self, teacher: Union[str, nn.Module] = PREVIOUS, student_layer: str = "features",
                 teacher_layer: Optional[str] = None, weight: float = 1.0, regressor: bool = True,
                 regressor_lr: Optional[float] = None, cache_teacher: bool = False, beta: Optional[float] = None):
        super().__init__(teacher, student_layer, teacher_layer, cache_teacher=cache_teacher)
        weight, name = renamed_argument(type(self).__name__, "beta", beta, "weight", weight, 1.0)
        self.weight = check_positive(name, weight, strict=False)
        self.use_regressor = check_type("regressor", regressor, bool)
        self.regressor_lr = None if regressor_lr is None else check_positive("regressor_lr", regressor_lr)
        self.loss_fn = FitNetsLoss()
        self._checked = False

    @property
    def regressor(self) -> Optional[nn.Module]:
        return self.loss_fn.regressor

    @regressor.setter
    def regressor(self, module):
        self.loss_fn.regressor = module

    def build_state_module(self, name, state):
        if name == "regressor":
            w = state["weight"]
            return nn.Linear(w.shape[1], w.shape[0]) if w.dim() == 2 else \
                (nn.Conv1d if w.dim() == 3 else nn.Conv2d)(w.shape[1], w.shape[0], kernel_size=1)
        return super().build_state_module(name, state)

    loss_term = "fitnets"

    def optimizer_groups(self, strategy):
        """The regressor (once created) is the plugin's own group (``regressor_lr``)."""
        if self.regressor is None:
            return []
        return [{"params": list(self.regressor.parameters()), "lr": self.regressor_lr, "name": "fitnets.regressor"}]

    def before_training_exp(self, strategy, **kwargs):
        super().before_training_exp(strategy, **kwargs)
        if self.regressor is not None:  # restored from a checkpoint
            self.regressor.to(strategy.device)
            ensure_optimizer(self, strategy)

    def distillation_loss(self, strategy):
        s, t = self.features(strategy)
        if not self._checked or self.regressor is None and s.shape[1:] != t.shape[1:]:
            if s.shape[1:] != t.shape[1:]:
                if not self.use_regressor:
                    raise ValueError(
                        f"FitNets: student layer {self.student_layer!r} gives features of shape {tuple(s.shape)} "
                        f"and teacher layer {self.teacher_layer!r} gives {tuple(t.shape)}; "
                        "pass regressor=True to learn a mapping"
                    )
                if self.regressor is None:
                    self.regressor = make_regressor(s.shape, t.shape, self.student_layer,
                                                    self.teacher_layer).to(strategy.device)
                    assemble_optimizer(strategy)  # created at the first step: it joins the optimizer now
            self._checked = True
        return self.weight * self.loss_fn(s, t)
