"""Gradient reversal (Ganin & Lempitsky 2015): identity forward, ``-lambda`` times the gradient backward."""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GradientReversalFunction", "grad_reverse", "GradientReversal", "ganin_lambda", "ganin_lr_factor"]


class GradientReversalFunction(torch.autograd.Function):
    """``R_lambda(x) = x`` forward; ``dR/dx = -lambda I`` backward."""

    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return -ctx.lambda_ * grad_output, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """Apply the gradient reversal layer with coefficient ``lambda_`` to ``x``."""
    return GradientReversalFunction.apply(x, lambda_)


def ganin_lambda(p: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s schedule ``lambda_p = 2 / (1 + exp(-gamma * p)) - 1`` for training progress ``p`` in [0, 1]."""
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def ganin_lr_factor(p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Ganin et al.'s learning-rate annealing ``mu_p / mu_0 = 1 / (1 + alpha * p) ** beta`` for progress ``p`` in [0, 1]."""
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    return 1.0 / (1.0 + alpha * p) ** beta


class GradientReversal(nn.Module):
    """The gradient reversal layer of DANN (Ganin & Lempitsky 2015, "Unsupervised Domain
    Adaptation by Backpropagation", ICML).

    Forward: ``y = x``. Backward: ``dL/dx = -lambda * dL/dy``. ``lambda_`` can be
    changed between steps (e.g. with :func:`ganin_lambda`).

    Args:
        lambda_: the reversal coefficient (default 1.0, >= 0).

    Example:
        >>> grl = GradientReversal(0.5)
        >>> y = grl(x)                     # y == x
        >>> grl.lambda_ = ganin_lambda(0.3)
    """

    def __init__(self, lambda_: float = 1.0):
        super().__init__()
        if isinstance(lambda_, bool) or not isinstance(lambda_, (int, float)) or not math.isfinite(lambda_) \
                or lambda_ < 0:
            raise ValueError(f"lambda_ must be a finite number >= 0, got {lambda_!r}")
        self.lambda_ = float(lambda_)

    def forward(self, x):
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"
