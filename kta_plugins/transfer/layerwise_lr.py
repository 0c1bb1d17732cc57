"""Discriminative (layer-wise) learning rates (Howard & Ruder 2018)."""
from __future__ import annotations

from typing import Optional, Sequence

from kta_plugins.compose import ensure_optimizer
from kta_plugins.base import KTAPlugin, check_positive, check_range, match_parameters, register_plugin
from kta_plugins.transfer.freeze import layer_groups, name_patterns as _patterns

__all__ = ["LayerwiseLR", "group_parameters"]


def group_parameters(model, groups: Sequence[str], argument: str = "groups") -> list[list[str]]:
    """Parameter names of each layer group (patterns, first match wins); parameters matched by
    no group come last, as their own list (possibly empty)."""
    seen: set = set()
    out = []
    for i, g in enumerate(groups):
        names = [n for n in match_parameters(model, g, argument=f"{argument}[{i}]") if n not in seen]
        seen.update(names)
        out.append(names)
    out.append([n for n, _ in model.named_parameters() if n not in seen])
    return out


@register_plugin("layerwise-lr", help="discriminative learning rates per layer group (ULMFiT)")
class LayerwiseLR(KTAPlugin):
    """Discriminative fine-tuning: one learning rate per layer group (Howard & Ruder 2018,
    "Universal Language Model Fine-tuning for Text Classification", ULMFiT).

    Groups are listed from the head (output) back to the input. Group ``i``
    trains at

        lr_i = base_lr * factors[i]        (default factors[i] = decay ** i)

    where ``base_lr`` is the optimizer's learning rate (ULMFiT: ``decay = 1/2.6``).
    Parameters in no group train at ``base_lr * factors[-1]``. The plugin only
    declares the scales (``optimizer_groups``); the strategy's optimizer assembly
    applies them at every experience, multiplied with other plugins' scales, and
    keeps the optimizer state (momentum).

    Args:
        groups: module names / globs per group, head first (default: every
            module owning parameters, output to input, see
            :func:`~kta_plugins.transfer.freeze.layer_groups`).
        decay: rate multiplier from one group to the next one towards the input,
            in (0, 1] (default 0.3).
        factors: explicit multipliers per group (overrides ``decay``).

    Example:
        >>> lw = LayerwiseLR(groups=["classifier", "features.3", "features.1"], decay=0.3)
        >>> strategy = Naive(model=model, optimizer=SGD(model.parameters(), lr=0.1), plugins=[lw])
        >>> # classifier at 0.1, features.3 at 0.03, features.1 at 0.009
    """

    state_attrs = ()

    def __init__(self, groups: Optional[Sequence[str]] = None, decay: float = 0.3,
                 factors: Optional[Sequence[float]] = None):
        super().__init__()
        self.groups = None if groups is None else _patterns("groups", groups)
        self.decay = check_range("decay", decay, 0.0, 1.0, low_inclusive=False)
        if factors is not None:
            factors = list(factors)
            if not factors:
                raise ValueError("factors must list at least one multiplier")
            for i, f in enumerate(factors):
                check_positive(f"factors[{i}]", f)
            if self.groups is not None and len(factors) != len(self.groups):
                raise ValueError(f"factors must have one entry per group ({len(self.groups)}), got {len(factors)}")
        self.factors = factors

    def before_training_exp(self, strategy, **kwargs):
        ensure_optimizer(self, strategy)  # a plain Avalanche template has no assembly step of its own

    def optimizer_groups(self, strategy):
        """Each group's model parameters re-scaled by its factor (the optimizer assembly multiplies
        them with other plugins' scales and keeps the optimizer state)."""
        model = strategy.model
        groups = self.groups if self.groups is not None else layer_groups(model)
        if self.factors is not None and len(self.factors) != len(groups):
            raise ValueError(f"factors must have one entry per group ({len(groups)}), got {len(self.factors)}")
        names = group_parameters(model, groups)
        f = self.factors if self.factors is not None else [self.decay ** i for i in range(len(groups))]
        f = list(f) + [f[-1]]
        params = dict(model.named_parameters())
        self._names = [ns for ns in names if ns]
        return [{"params": [params[n] for n in ns], "lr_scale": x, "name": f"layerwise-lr[{i}]"}
                for i, (ns, x) in enumerate(zip(names, f)) if ns]
