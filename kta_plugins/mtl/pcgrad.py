"""PCGrad: gradient surgery by projecting conflicting gradients (Yu et al. 2020) (M8)."""
from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch

from ..base import check_int, register_plugin
from .terms import SharedGradientPlugin, loss_terms, redirect_gradient, task_gradients

__all__ = ["PCGrad", "pcgrad"]


def pcgrad(grads: torch.Tensor, orders: Optional[Sequence[Sequence[int]]] = None) -> torch.Tensor:
    """PCGrad's combined gradient ``sum_k g_k^PC`` for ``grads`` of shape ``(K, D)``.

    For each task ``i``, ``g_i^PC`` starts at ``g_i`` and, for each other task ``j``
    (in ``orders[i]``, default ascending), if ``g_i^PC . g_j < 0``:
    ``g_i^PC <- g_i^PC - (g_i^PC . g_j / ||g_j||^2) g_j``.
    """
    k = grads.shape[0]
    out = torch.zeros_like(grads[0])
    for i in range(k):
        g = grads[i].clone()
        order = orders[i] if orders is not None else range(k)
        for j in order:
            if j == i:
                continue
            dot = torch.dot(g, grads[j])
            if dot < 0:
                g = g - dot / grads[j].pow(2).sum().clamp_min(1e-20) * grads[j]
        out = out + g
    return out


@register_plugin("pcgrad")
class PCGrad(SharedGradientPlugin):
    """PCGrad ("Gradient Surgery for Multi-Task Learning", Yu et al., NeurIPS 2020).

    With ``g_k`` the gradient of loss term ``k`` w.r.t. the shared parameters
    (or the shared representation), each ``g_i`` is projected onto the normal
    plane of every ``g_j`` it conflicts with (``g_i . g_j < 0``), the others
    taken in a random order: ``g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j``. The
    shared part is then updated with ``sum_k g_k^PC``; task-specific parts keep
    their own gradients, and ``rest`` (penalties outside the terms) keeps its
    gradient. Under a continual strategy the terms are ``new`` / ``replay`` /
    ``regularizers`` (M9): PCGrad arbitrates between new data and replay.

    Args:
        shared: the shared module (default ``"features"``).
        wrt: ``"parameters"`` (default, the paper) or ``"representation"``.
        seed: seed of the random projection orders (drawn per iteration).

    Example:
        >>> MultiTask(model=net, optimizer=opt, plugins=[PCGrad(shared="features")])
        >>> Naive(model=mlp, optimizer=opt, plugins=[ReplayPlugin(200), PCGrad()])   # new vs replay
    """

    state_attrs = ("n_steps",)

    def __init__(self, shared: str = "features", wrt: Literal["parameters", "representation"] = "parameters",
                 seed: int = 0):
        super().__init__(shared, wrt)
        self.seed = check_int("seed", seed)
        self.n_steps = 0

    def finalize_loss(self, strategy):
        names, losses, _, _ = loss_terms(strategy)
        self.n_steps += 1
        if len(names) < 2:
            return
        tensors = self.grads.tensors()
        if not tensors:  # the shared part is frozen for now (e.g. LP-FT's probing phase)
            return
        g = task_gradients(losses, tensors)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.n_steps)
        orders = [torch.randperm(len(names), generator=gen).tolist() for _ in names]
        redirect_gradient(strategy, tensors, g.sum(0), pcgrad(g, orders))
