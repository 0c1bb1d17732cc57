"""Static loss weights (M5): ``loss = sum_k w_k L_k``."""
from __future__ import annotations

import math
import numbers
from typing import Optional, Union

from ..base import register_plugin
from .terms import ArbitratingPlugin, apply_weights, loss_terms

__all__ = ["StaticWeights", "check_weights"]


def check_weights(weights, argument: str = "weights"):
    """A dict ``{name: w}`` or a list of finite weights >= 0 whose sum is > 0 (``None`` passes)."""
    if weights is None:
        return None
    if isinstance(weights, dict):
        values = list(weights.values())
        if not all(isinstance(k, str) for k in weights):
            raise TypeError(f"{argument}: keys must be task names (str), got {list(weights)}")
    elif isinstance(weights, (list, tuple)):
        values = list(weights)
    else:
        raise TypeError(f"{argument} must be a dict {{task: weight}} or a list of weights, got {type(weights).__name__}")
    if not values:
        raise ValueError(f"{argument} must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{argument}: every weight must be a finite number >= 0, got {v!r}")
    if isinstance(weights, (list, tuple)) and not sum(values) > 0:
        raise ValueError(f"{argument} must sum to a positive value, got sum {sum(values)!r}")
    # a dict leaves unnamed terms at weight 1; its sum is checked once the terms are known
    return dict(weights) if isinstance(weights, dict) else [float(v) for v in values]


def resolve_weights(weights, names, argument: str = "weights") -> list:
    """Weights in the order of ``names`` (terms without a weight in a dict get ``default``)."""
    if weights is None:
        return [1.0] * len(names)
    if isinstance(weights, dict):
        unknown = [n for n in weights if n not in names]
        if unknown:
            raise ValueError(f"{argument}: {unknown} name no loss term; the terms are {names}")
        out = [float(weights.get(n, 1.0)) for n in names]
        if not sum(out) > 0:
            raise ValueError(f"{argument} must sum to a positive value over the loss terms {names}, got {out}")
        return out
    if len(weights) != len(names):
        raise ValueError(f"{argument} has {len(weights)} weights but there are {len(names)} tasks / loss terms {names}")
    return list(weights)


@register_plugin("static-weights")
class StaticWeights(ArbitratingPlugin):
    """Fixed weights on the per-task losses (or on a continual strategy's loss terms).

    Formula: ``loss = rest + sum_k w_k L_k`` where ``L_k`` are the terms of
    :func:`kta_plugins.mtl.terms.loss_terms` (per-task losses under
    ``MultiTask``; ``new`` / ``replay`` / ``regularizers`` otherwise).

    Args:
        weights: ``{task: weight}`` (unnamed terms keep weight 1) or a list in
            task order; finite, >= 0, summing to > 0 (a list: checked here; a
            dict: once the terms are known, before the first update). Default
            ``None``: all 1.

    Example:
        >>> strategy = MultiTask(model=net, optimizer=opt,
        ...                      plugins=[StaticWeights({"points": 1.0, "size": 5.0})])
        >>> # kta run --scenario stars --strategy multitask --plugin "static-weights:weights={'size':5.0}"
    """

    def __init__(self, weights: Optional[Union[dict, list]] = None):
        super().__init__()
        self.weights = check_weights(weights)

    def finalize_loss(self, strategy):
        names, losses, _, rest = loss_terms(strategy)
        apply_weights(strategy, losses, resolve_weights(self.weights, names), rest)
