"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich 2018) (M7)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..base import check_positive, check_range, check_type, register_plugin
from ..nn.tap import resolve_module
from .terms import ArbitratingPlugin, apply_weights, loss_terms, task_gradients

__all__ = ["GradNorm", "gradnorm_update"]


def gradnorm_update(weights, grad_norms, loss_ratios, alpha: float, lr: float) -> list:
    """One GradNorm step on the task weights.

    ``G_k = w_k ||grad_W L_k||``, ``G_bar = mean_k G_k``, ``r_k = Ltilde_k / mean(Ltilde)``
    with ``Ltilde_k = L_k(t) / L_k(0)``; ``L_grad = sum_k |G_k - G_bar r_k^alpha|`` with the
    target held constant; ``w <- w - lr dL_grad/dw``, then renormalised to ``sum_k w_k = K``.
    """
    w = torch.as_tensor(weights, dtype=torch.float64)
    n = torch.as_tensor(grad_norms, dtype=torch.float64)
    lt = torch.as_tensor(loss_ratios, dtype=torch.float64)
    k = len(w)
    g = w * n
    r = lt / lt.mean()
    target = g.mean() * r ** alpha
    grad = torch.sign(g - target) * n  # d|w_k n_k - target_k| / d w_k
    w = torch.clamp(w - lr * grad, min=1e-4)
    w = w * k / w.sum()
    return w.tolist()


def _last_layer(model: nn.Module, shared: str, layer: Optional[str]):
    if layer is not None:
        module = resolve_module(model, layer, argument="layer")
    else:
        root = resolve_module(model, shared, argument="shared")
        with_params = [m for m in root.modules() if any(True for _ in m.parameters(recurse=False))]
        if not with_params:
            raise ValueError(f"shared={shared!r} has no parameters for GradNorm's gradient norms")
        module = with_params[-1]
    params = list(module.parameters(recurse=False))
    if not params:
        raise ValueError(f"GradNorm: the layer {layer or shared!r} has no parameters")
    return params


@register_plugin("gradnorm")
class GradNorm(ArbitratingPlugin):
    """GradNorm: balance tasks by normalising their gradient magnitudes (Chen et al., ICML 2018).

    With ``W`` the last shared layer, ``G_k = ||grad_W (w_k L_k)||``,
    ``G_bar`` their mean, ``Ltilde_k = L_k(t) / L_k(0)`` and
    ``r_k = Ltilde_k / mean_j Ltilde_j`` (the relative inverse training rate):

        ``L_grad = sum_k | G_k - G_bar * r_k^alpha |``

    (target treated as a constant). The model is trained on
    ``loss = rest + sum_k w_k L_k``; after each iteration the weights take one
    gradient step on ``L_grad`` and are renormalised to ``sum_k w_k = K``.
    A task with a larger gradient norm than its target loses weight; a task
    training more slowly (larger ``r_k``) gains weight. ``L_k(0)`` is the
    task's loss on the first minibatch it appears in.

    Args:
        alpha: the asymmetry ``alpha`` (default 1.5; 0 equalises gradient norms).
        lr: step size of the weights (default 0.025).
        shared: the shared module (default ``"features"``); ``W`` is its last
            module with parameters.
        layer: the layer ``W`` by name (overrides the choice from ``shared``).

    Example:
        >>> plugin = GradNorm(alpha=1.5, shared="features")
        >>> MultiTask(model=net, optimizer=opt, plugins=[plugin]).train(bm.train_stream[0])
        >>> plugin.weights
    """

    state_attrs = ("weights", "initial_losses")

    def __init__(self, alpha: float = 1.5, lr: float = 0.025, shared: str = "features", layer: Optional[str] = None):
        super().__init__()
        self.alpha = check_range("alpha", alpha, 0.0, 100.0)
        self.lr = check_positive("lr", lr)
        self.shared = check_type("shared", shared, str)
        self.layer = check_type("layer", layer, str, allow_none=True)
        self.weights: dict = {}
        self.initial_losses: dict = {}
        self._params = None

    def before_training_exp(self, strategy, **kwargs):
        self._params = _last_layer(strategy.model, self.shared, self.layer)

    def after_training_exp(self, strategy, **kwargs):
        self._params = None

    def finalize_loss(self, strategy):
        names, losses, _, rest = loss_terms(strategy)
        if self._params is None:
            self._params = _last_layer(strategy.model, self.shared, self.layer)
        for n, l in zip(names, losses):
            self.weights.setdefault(n, 1.0)
            if n not in self.initial_losses:
                self.initial_losses[n] = max(float(l.detach()), 1e-12)
        w = [self.weights[n] for n in names]
        apply_weights(strategy, losses, w, rest)
        trainable = [p for p in self._params if p.requires_grad]  # another plugin may freeze the layer a while
        if len(names) > 1 and trainable:
            norms = task_gradients(losses, trainable).norm(dim=1)
            ratios = [max(float(l.detach()), 0.0) / self.initial_losses[n] for n, l in zip(names, losses)]
            for n, v in zip(names, gradnorm_update(w, norms.tolist(), ratios, self.alpha, self.lr)):
                self.weights[n] = v
