"""CAGrad: conflict-averse gradient descent (Liu et al. 2021) (M8)."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..base import check_positive, register_plugin
from .terms import SharedGradientPlugin, loss_terms, redirect_gradient, task_gradients

__all__ = ["CAGrad", "cagrad"]


def cagrad(grads: torch.Tensor, c: float = 0.4, rescale: bool = True) -> torch.Tensor:
    """CAGrad's update direction for ``grads`` (``K x D``), in the summed-loss scale.

    ``g0 = mean_k g_k``; ``w = argmin_{w in simplex} g_w . g0 + sqrt(phi) ||g_w||`` with
    ``g_w = sum_k w_k g_k`` and ``phi = c^2 ||g0||^2``; ``d = g0 + (sqrt(phi) / ||g_w||) g_w``,
    divided by ``1 + c^2`` when ``rescale`` (the official code's ``rescale=1``). Returned as
    ``K d`` so that ``c = 0`` gives ``sum_k g_k``, the gradient of the summed losses.
    """
    from scipy.optimize import minimize

    k = grads.shape[0]
    g = grads.double()
    gg = (g @ g.T).numpy()
    g0_norm = float(np.sqrt(max(gg.mean(), 0.0) + 1e-12))
    cn = c * g0_norm
    b = np.full(k, 1.0 / k)
    a_b = gg @ b

    def objective(x):
        return float(x @ a_b + cn * np.sqrt(max(x @ gg @ x, 0.0) + 1e-12))

    res = minimize(objective, b, bounds=[(0, 1)] * k,
                   constraints=({"type": "eq", "fun": lambda x: 1 - x.sum()},), method="SLSQP")
    w = torch.as_tensor(res.x, dtype=torch.float64)
    gw = w @ g
    d = g.mean(0) + cn / (gw.norm() + 1e-12) * gw
    if rescale:
        d = d / (1 + c ** 2)
    return (k * d).to(grads.dtype)


@register_plugin("cagrad")
class CAGrad(SharedGradientPlugin):
    """CAGrad (Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task
    Learning", NeurIPS 2021).

    Maximises the worst local improvement of any task within a ball around the
    average gradient ``g0``: ``d = g0 + (c ||g0|| / ||g_w||) g_w`` with
    ``w = argmin_{w in simplex} g_w . g0 + c ||g0|| ||g_w||`` (solved with SLSQP
    as the official code), divided by ``1 + c^2``. The shared part is updated
    with ``K d`` (so ``c = 0`` equals plain summed losses); task-specific parts
    and ``rest`` keep their gradients.

    Args:
        c: the radius ``c`` (default 0.4).
        shared: the shared module (default ``"features"``).
        wrt: ``"parameters"`` (default) or ``"representation"``.
        rescale: divide by ``1 + c^2`` (default True).

    Example:
        >>> MultiTask(model=net, optimizer=opt, plugins=[CAGrad(c=0.4)])
    """

    state_attrs = ()

    def __init__(self, c: float = 0.4, shared: str = "features",
                 wrt: Literal["parameters", "representation"] = "parameters", rescale: bool = True):
        super().__init__(shared, wrt)
        self.c = check_positive("c", c, strict=False)
        if not isinstance(rescale, bool):
            raise TypeError(f"rescale must be a bool, got {type(rescale).__name__} {rescale!r}")
        self.rescale = rescale

    def finalize_loss(self, strategy):
        names, losses, _, _ = loss_terms(strategy)
        if len(names) < 2:
            return
        tensors = self.grads.tensors()
        if not tensors:  # the shared part is frozen for now (e.g. LP-FT's probing phase)
            return
        g = task_gradients(losses, tensors)
        redirect_gradient(strategy, tensors, g.sum(0), cagrad(g.detach(), self.c, self.rescale))
