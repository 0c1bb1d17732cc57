"""Uncertainty weighting (Kendall, Gal & Cipolla 2018) (M5)."""
from __future__ import annotations

import math

import torch

from ..base import check_positive, check_range, register_plugin
from .terms import ArbitratingPlugin, loss_terms

__all__ = ["Uncertainty", "uncertainty_loss"]


def uncertainty_loss(losses, log_vars, kinds):
    """``sum_k c_k exp(-s_k) L_k + s_k / 2`` with ``s_k = log sigma_k^2``,
    ``c_k = 1/2`` for regression and ``1`` for classification."""
    total = 0.0
    for loss, s, kind in zip(losses, log_vars, kinds):
        c = 0.5 if kind == "regression" else 1.0
        total = total + c * torch.exp(-s) * loss + 0.5 * s
    return total


@register_plugin("uncertainty")
class Uncertainty(ArbitratingPlugin):
    """Homoscedastic-uncertainty task weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Each task ``k`` has a learned ``s_k = log sigma_k^2``; the loss is

        ``loss = rest + sum_k c_k exp(-s_k) L_k + s_k / 2``

    with ``c_k = 1/2`` for a regression task (Gaussian likelihood:
    ``L / (2 sigma^2) + log sigma``) and ``c_k = 1`` for a classification task
    (``L / sigma^2 + log sigma``). The ``s_k`` belong to the plugin, not to the
    model: they are updated by the plugin's own SGD step (``lr``) after each
    optimizer step, so they stay out of ``strategy.optimizer``.

    Args:
        init_log_var: initial ``s_k`` (default 0.0, i.e. sigma = 1).
        lr: SGD learning rate of the ``s_k`` (default 0.05).

    Example:
        >>> plugin = Uncertainty(lr=0.05)
        >>> MultiTask(model=net, optimizer=opt, plugins=[plugin]).train(bm.train_stream[0])
        >>> plugin.sigmas()       # {"points": ..., "size": ...}
    """

    state_attrs = ("log_vars",)

    def __init__(self, init_log_var: float = 0.0, lr: float = 0.05):
        super().__init__()
        self.init_log_var = float(check_range("init_log_var", init_log_var, -20.0, 20.0))
        self.lr = check_positive("lr", lr)
        self.log_vars: dict = {}

    def _log_var(self, name, device):
        if name not in self.log_vars:
            self.log_vars[name] = torch.tensor(self.init_log_var, device=device, requires_grad=True)
        s = self.log_vars[name]
        if s.device != torch.device(device):
            s = self.log_vars[name] = s.detach().to(device).requires_grad_(True)
        return s

    def finalize_loss(self, strategy):
        names, losses, kinds, rest = loss_terms(strategy)
        s = [self._log_var(n, strategy.device) for n in names]
        strategy.loss = rest + uncertainty_loss(losses, s, kinds)

    def after_update(self, strategy, **kwargs):
        with torch.no_grad():
            for s in self.log_vars.values():
                if s.grad is not None:
                    s -= self.lr * s.grad
                    s.grad = None

    def sigmas(self) -> dict:
        """``{task: sigma_k}`` (``exp(s_k / 2)``)."""
        return {n: math.exp(float(s) / 2) for n, s in self.log_vars.items()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.log_vars = {n: s.detach().clone().requires_grad_(True) for n, s in self.log_vars.items()}
