"""Gradual unfreezing (Howard & Ruder 2018): the head first, then earlier layer groups."""
from __future__ import annotations

from typing import Literal, Optional, Sequence

from kta_plugins.base import KTAPlugin, check_choice, check_int, register_plugin
from kta_plugins.transfer.freeze import clear_frozen_grads, layer_groups, set_frozen_bn_eval, name_patterns as _patterns
from kta_plugins.transfer.layerwise_lr import group_parameters

__all__ = ["GradualUnfreeze"]


@register_plugin("gradual-unfreeze", help="gradual unfreezing (ULMFiT): head first, earlier groups later")
class GradualUnfreeze(KTAPlugin):
    """Gradual unfreezing (Howard & Ruder 2018, "Universal Language Model Fine-tuning for Text
    Classification", ULMFiT).

    Layer groups are listed from the head back to the input. At stage ``s``
    the groups ``0..s`` train and the others are frozen (``requires_grad=False``,
    their gradients dropped before each update, so they stay bit-for-bit
    unchanged). The stage is

        s = (epoch within the experience) // every           (unit="epoch")
        s = (number of experiences trained before) // every  (unit="experience")

    With ``unit="epoch"`` the schedule restarts at each experience (each new
    target is approached head first). Parameters in no group unfreeze with the
    last group.

    Args:
        groups: module names / globs per group, head first (default: every
            module owning parameters, output to input).
        every: epochs (or experiences) between two unfreezing steps (default 1).
        unit: ``"epoch"`` or ``"experience"`` (default ``"epoch"``).

    Example:
        >>> gu = GradualUnfreeze(groups=["classifier", "features.3", "features.1"], every=1)
        >>> strategy = Naive(model=model, optimizer=opt, train_epochs=3, plugins=[gu])
    """

    roles = ("freezes-layers",)  # kta_plugins.compose.check_roles

    state_attrs = ("experiences_seen", "stage")

    def __init__(self, groups: Optional[Sequence[str]] = None, every: int = 1,
                 unit: Literal["epoch", "experience"] = "epoch"):
        super().__init__()
        self.groups = None if groups is None else _patterns("groups", groups)
        self.every = check_int("every", every, minimum=1)
        self.unit = check_choice("unit", unit, ("epoch", "experience"))
        self.experiences_seen = 0
        self.stage = 0
        self._epoch = 0
        self._frozen: list[str] = []

    def _apply(self, strategy):
        model = strategy.model
        groups = self.groups if self.groups is not None else layer_groups(model)
        names = group_parameters(model, groups)
        names[-2] = names[-2] + names[-1]  # unmatched parameters go with the last group
        names = names[:-1]
        params = dict(model.named_parameters())
        self._frozen = []
        for i, ns in enumerate(names):
            for n in ns:
                trainable = i <= self.stage
                if not trainable and params[n].requires_grad:
                    strategy.optimizer.state.pop(params[n], None)
                params[n].requires_grad_(trainable)
                if not trainable:
                    params[n].grad = None
                    self._frozen.append(n)
        set_frozen_bn_eval(model)

    def before_training_exp(self, strategy, **kwargs):
        self._epoch = 0
        if self.unit == "experience":
            self.stage = self.experiences_seen // self.every

    def before_training_epoch(self, strategy, **kwargs):
        if self.unit == "epoch":
            self.stage = self._epoch // self.every
        self._apply(strategy)

    def after_training_epoch(self, strategy, **kwargs):
        self._epoch += 1

    def after_training_exp(self, strategy, **kwargs):
        self.experiences_seen += 1

    def before_update(self, strategy, **kwargs):
        clear_frozen_grads(strategy.model, self._frozen)
