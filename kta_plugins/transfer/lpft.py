"""LP-FT: linear probing, then fine-tuning everything at a lower rate (Kumar et al. 2022)."""
from __future__ import annotations

from typing import Sequence

from kta_plugins.base import KTAPlugin, check_int, check_positive, match_parameters, register_plugin
from kta_plugins.compose import set_lr_factor
from kta_plugins.transfer.freeze import clear_frozen_grads, set_frozen_bn_eval, name_patterns as _patterns

__all__ = ["LPFT"]


@register_plugin("lpft", help="LP-FT (Kumar et al. 2022): probe the head, then fine-tune all at a lower rate")
class LPFT(KTAPlugin):
    """LP-FT (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features and
    Underperform Out-of-Distribution").

    In every experience: for the first ``probe_epochs`` epochs only the head
    trains (the backbone is frozen as in :class:`~kta_plugins.transfer.Freeze`);
    for the remaining epochs every parameter trains, at the optimizer's rates
    times ``ft_lr_scale``. Starting the fine-tuning from a fitted head keeps
    the early gradients from distorting the pretrained features. The rates are
    restored at the end of the experience. Train for more than ``probe_epochs``
    epochs.

    Args:
        head: names / globs of the head parameters (default ``["classifier"]``).
        probe_epochs: epochs of linear probing per experience (default 1).
        ft_lr_scale: rate multiplier during fine-tuning (default 0.1).

    Example:
        >>> strategy = Naive(model=model, optimizer=opt, train_epochs=10,
        ...                  plugins=[LPFT(head=["classifier"], probe_epochs=5, ft_lr_scale=0.1)])
    """

    roles = ("freezes-layers",)  # kta_plugins.compose.check_roles

    state_attrs = ("phase",)

    def __init__(self, head: Sequence[str] = ("classifier",), probe_epochs: int = 1, ft_lr_scale: float = 0.1):
        super().__init__()
        self.head = _patterns("head", head)
        self.probe_epochs = check_int("probe_epochs", probe_epochs, minimum=1)
        self.ft_lr_scale = check_positive("ft_lr_scale", ft_lr_scale)
        self.phase = "probe"
        self._epoch = 0
        self._frozen: list[str] = []

    def before_training_exp(self, strategy, **kwargs):
        head = set(match_parameters(strategy.model, self.head, argument="head"))
        self._epoch = 0
        self.phase = "probe"
        self._frozen = []
        for n, p in strategy.model.named_parameters():
            if n not in head:
                p.requires_grad_(False)
                p.grad = None
                strategy.optimizer.state.pop(p, None)
                self._frozen.append(n)

    def before_training_epoch(self, strategy, **kwargs):
        if self.phase == "probe" and self._epoch >= self.probe_epochs:
            self.phase = "finetune"
            params = dict(strategy.model.named_parameters())
            for n in self._frozen:
                params[n].requires_grad_(True)
            self._frozen = []
            # a learning-rate factor of the optimizer assembly (multiplies any other plugin's)
            set_lr_factor(strategy, self, self.ft_lr_scale)
        set_frozen_bn_eval(strategy.model)

    def after_training_epoch(self, strategy, **kwargs):
        self._epoch += 1

    def before_update(self, strategy, **kwargs):
        clear_frozen_grads(strategy.model, self._frozen)

    def after_training_exp(self, strategy, **kwargs):
        set_lr_factor(strategy, self, 1.0)
