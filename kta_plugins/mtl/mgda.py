"""MGDA: multi-task learning as multi-objective optimisation (Sener & Koltun 2018) (M8)."""
from __future__ import annotations

from typing import Literal

import torch

from ..base import check_choice, check_int, register_plugin
from .terms import SharedGradientPlugin, apply_weights, loss_terms, task_gradients

__all__ = ["MGDA", "min_norm_weights", "min_norm_two"]


def min_norm_two(g1g1: float, g1g2: float, g2g2: float) -> float:
    """Closed form of ``argmin_{a in [0,1]} ||a g1 + (1-a) g2||^2``:
    ``a = clip((g2 - g1) . g2 / ||g1 - g2||^2, 0, 1)``."""
    denom = g1g1 + g2g2 - 2 * g1g2
    if denom <= 0:
        return 0.5  # g1 == g2: every combination is the same vector
    return float(min(max((g2g2 - g1g2) / denom, 0.0), 1.0))


def min_norm_weights(grads: torch.Tensor, max_iter: int = 250, tol: float = 1e-7) -> torch.Tensor:
    """``argmin_{a in simplex} ||sum_k a_k g_k||^2`` for ``grads`` of shape ``(K, D)``.

    Two tasks: :func:`min_norm_two`. More: Frank-Wolfe on the Gram matrix with the
    exact line search of :func:`min_norm_two` (Sener & Koltun, Algorithm 2).
    """
    k = grads.shape[0]
    if k == 1:
        return torch.ones(1, dtype=grads.dtype)
    m = (grads.double() @ grads.double().T)
    if k == 2:
        a = min_norm_two(float(m[0, 0]), float(m[0, 1]), float(m[1, 1]))
        return torch.tensor([a, 1 - a], dtype=grads.dtype)
    alpha = torch.full((k,), 1.0 / k, dtype=torch.float64)
    for _ in range(max_iter):
        ma = m @ alpha
        t = int(torch.argmin(ma))
        vv, vg, gg = float(alpha @ ma), float(ma[t]), float(m[t, t])
        gamma = min_norm_two(vv, vg, gg)  # weight on the current point
        new = gamma * alpha
        new[t] += 1 - gamma
        if float((new - alpha).abs().sum()) < tol:
            alpha = new
            break
        alpha = new
    return alpha.to(grads.dtype)


@register_plugin("mgda")
class MGDA(SharedGradientPlugin):
    """MGDA (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018).

    Finds the minimum-norm point of the convex hull of the per-task gradients
    ``g_k`` w.r.t. the shared parameters (or, MGDA-UB, the shared
    representation): ``a = argmin_{a in simplex} ||sum_k a_k g_k||^2``; two
    tasks in closed form ``a_1 = clip((g_2 - g_1) . g_2 / ||g_1 - g_2||^2, 0, 1)``,
    more by Frank-Wolfe. The model is trained on ``loss = rest + sum_k a_k L_k``
    (``a`` held constant; the ``a_k`` sum to 1, as in the paper).

    Args:
        shared: the shared module (default ``"features"``).
        wrt: ``"parameters"`` (default) or ``"representation"`` (MGDA-UB).
        normalize: gradient normalisation before solving: ``"none"`` (default)
            or ``"l2"`` (each ``g_k`` divided by its norm).
        max_iter: Frank-Wolfe iterations for more than two tasks (default 250).

    Example:
        >>> plugin = MGDA(shared="features", wrt="representation")
        >>> MultiTask(model=net, optimizer=opt, plugins=[plugin]); plugin.last_weights
    """

    state_attrs = ()

    def __init__(self, shared: str = "features", wrt: Literal["parameters", "representation"] = "parameters",
                 normalize: Literal["none", "l2"] = "none", max_iter: int = 250):
        super().__init__(shared, wrt)
        self.normalize = check_choice("normalize", normalize, ("none", "l2"))
        self.max_iter = check_int("max_iter", max_iter, minimum=1)
        self.last_weights: dict = {}

    def finalize_loss(self, strategy):
        names, losses, _, rest = loss_terms(strategy)
        if len(names) < 2:
            return
        tensors = self.grads.tensors()
        if not tensors:  # the shared part is frozen for now (e.g. LP-FT's probing phase)
            return
        g = task_gradients(losses, tensors).detach()
        if self.normalize == "l2":
            g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        a = min_norm_weights(g, self.max_iter)
        self.last_weights = dict(zip(names, a.tolist()))
        apply_weights(strategy, losses, a.tolist(), rest)
