"""Dynamic Weight Average (Liu, Johns & Davison 2019) (M6)."""
from __future__ import annotations

import math

from ..base import check_positive, register_plugin
from .terms import ArbitratingPlugin, apply_weights, loss_terms

__all__ = ["DWA", "dwa_weights"]


def dwa_weights(previous: dict, before: dict, names, temperature: float) -> list:
    """``w_k = K exp(r_k / T) / sum_i exp(r_i / T)``, ``r_k = L_k(t-1) / L_k(t-2)``
    (all 1 until two epochs of every term are known)."""
    if any(n not in previous or n not in before for n in names):
        return [1.0] * len(names)
    r = [previous[n] / before[n] if before[n] > 0 else 1.0 for n in names]
    m = max(x / temperature for x in r)
    e = [math.exp(x / temperature - m) for x in r]
    return [len(names) * v / sum(e) for v in e]


@register_plugin("dwa")
class DWA(ArbitratingPlugin):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, "End-to-end multi-task learning
    with attention").

    Formula: ``w_k(t) = K exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T)`` with
    ``r_k(t-1) = L_k(t-1) / L_k(t-2)``, ``L_k(t)`` the mean loss of term ``k``
    over training epoch ``t``; ``w_k = 1`` for the first two epochs. A task
    whose loss falls slowly gets more weight. ``loss = rest + sum_k w_k L_k``.

    Args:
        temperature: ``T`` (default 2.0, as the paper); larger = more uniform.

    Example:
        >>> MultiTask(model=net, optimizer=opt, train_epochs=20, plugins=[DWA(temperature=2.0)])
    """

    state_attrs = ("history", "_sums", "_counts")

    def __init__(self, temperature: float = 2.0):
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.history: list = []  # mean losses of the last two finished epochs, oldest first
        self._sums: dict = {}
        self._counts: dict = {}

    def current_weights(self, names) -> list:
        if len(self.history) < 2:
            return [1.0] * len(names)
        return dwa_weights(self.history[-1], self.history[-2], names, self.temperature)

    def finalize_loss(self, strategy):
        names, losses, _, rest = loss_terms(strategy)
        for n, l in zip(names, losses):
            self._sums[n] = self._sums.get(n, 0.0) + float(l.detach())
            self._counts[n] = self._counts.get(n, 0) + 1
        apply_weights(strategy, losses, self.current_weights(names), rest)

    def after_training_epoch(self, strategy, **kwargs):
        if self._counts:
            self.history = (self.history + [{n: self._sums[n] / self._counts[n] for n in self._sums}])[-2:]
        self._sums, self._counts = {}, {}
