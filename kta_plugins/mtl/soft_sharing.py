"""Soft parameter sharing: an L2 tie between task towers."""
from __future__ import annotations

from typing import Optional

from ..base import KTAPlugin, check_positive, check_type, register_plugin, renamed_argument
from ..compose import add_loss_term
from ..nn.tap import resolve_module

__all__ = ["SoftSharingPenalty"]


def _towers(model, name):
    module = resolve_module(model, name, argument="towers")
    children = list(module.children())
    if len(children) < 2:
        raise ValueError(f"towers={name!r} must hold at least two towers (children), got {len(children)}")
    shapes = [[tuple(p.shape) for p in c.parameters()] for c in children]
    if any(s != shapes[0] for s in shapes[1:]):
        raise ValueError(f"towers={name!r}: the towers must have identical parameter shapes to be tied; got {shapes}")
    return children


def _check_model():
    """Two identical MLP towers over 8x8 digits (4 classes), outputs averaged."""
    from torch import nn

    from ..nn import MLP

    class TwoTowers(nn.Module):
        def __init__(self):
            super().__init__()
            self.towers = nn.ModuleList([MLP((1, 8, 8), 4, hidden=(16,)) for _ in range(2)])

        def forward(self, x):
            return sum(t(x) for t in self.towers) / len(self.towers)

    return TwoTowers()


@register_plugin("soft-sharing")
class SoftSharingPenalty(KTAPlugin):
    """Soft parameter sharing (Duong et al. 2015; Ruder 2017's overview): one tower per task,
    tied by an L2 penalty between corresponding parameters.

    Formula: ``loss += weight * sum_{a < b} sum_p ||theta_a^p - theta_b^p||^2`` over the
    children of the ``towers`` module (e.g. :class:`kta_plugins.nn.multitask.SoftSharing`).
    Under ``MultiTask`` the penalty stays outside the per-task terms, so weighting
    plugins leave it unweighted.

    Args:
        weight: the tie's weight (default 1e-3).
        strength: deprecated alias of ``weight`` (one release; warns).
        towers: the module whose children are the towers (default ``"towers"``).

    Example:
        >>> net = SoftSharing(bm.tasks, input_shape=bm.input_shape)
        >>> MultiTask(model=net, optimizer=opt, plugins=[SoftSharingPenalty(weight=1e-3)])
    """

    check_model = staticmethod(_check_model)

    def __init__(self, weight: float = 1e-3, towers: str = "towers", strength: Optional[float] = None):
        super().__init__()
        weight, name = renamed_argument(type(self).__name__, "strength", strength, "weight", weight, 1e-3)
        self.weight = check_positive(name, weight, strict=False)
        self.towers = check_type("towers", towers, str)

    def before_training_exp(self, strategy, **kwargs):
        _towers(strategy.model, self.towers)  # a missing or mismatched module fails here, before training

    def penalty(self, model):
        towers = _towers(model, self.towers)
        params = [list(t.parameters()) for t in towers]
        total = 0.0
        for a in range(len(params)):
            for b in range(a + 1, len(params)):
                total = total + sum(((p - q) ** 2).sum() for p, q in zip(params[a], params[b]))
        return total

    def before_backward(self, strategy, **kwargs):
        add_loss_term(strategy, "soft-sharing", self.penalty(strategy.model), weight=self.weight, owner=self)
