"""Transfer-learning strategies: linear probe, fine-tuning, LP-FT.

Each is KTA's :class:`~strategies.base.Naive` with plugins from
:mod:`kta_plugins.transfer` added in front of the user's plugins.

Example:
    >>> from strategies.finetune import LinearProbe, FineTune, LPFTStrategy
    >>> s = LinearProbe(model=model, optimizer=SGD(model.parameters(), lr=0.1), head=["classifier"])
    >>> s = FineTune(model=model, optimizer=opt, lr_decay=0.3, l2sp=0.01)
    >>> s = LPFTStrategy(model=model, optimizer=opt, train_epochs=10, probe_epochs=5, ft_lr_scale=0.1)
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from kta_plugins.base import check_positive, check_range, check_type, match_parameters
from kta_plugins.transfer import L2SP, LPFT, Freeze, LayerwiseLR

from .base import Naive
from .registry import register_strategy

__all__ = ["LinearProbe", "FineTune", "LPFTStrategy"]


def _head(head):
    if isinstance(head, str):
        head = [head]
    check_type("head", head, (list, tuple))
    if not head:
        raise ValueError("head must name at least one module")
    return list(head)


def _reset(model: nn.Module, head: Sequence[str]):
    names = set()
    for n in match_parameters(model, head, argument="head"):
        names.add(n.rpartition(".")[0])
    for n in names:
        m = model.get_submodule(n)
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


class LinearProbe(Naive):
    """Linear probing: the backbone is frozen (bit-for-bit), only the head trains.

    Args:
        head: names / globs of the head (default ``["classifier"]``).
        reset_head: re-initialise the head before training (default False).
        **kwargs: KTA strategy arguments (``model=``, ``optimizer=``, ``train_epochs=``, ...).
    """

    def __init__(self, *, model: nn.Module, head: Sequence[str] = ("classifier",), reset_head: bool = False,
                 plugins: Optional[Sequence] = None, **kwargs):
        head = _head(head)
        match_parameters(model, head, argument="head")
        if check_type("reset_head", reset_head, bool):
            _reset(model, head)
        super().__init__(model=model, plugins=[Freeze(patterns=["*"], exclude=head), *(plugins or [])], **kwargs)


class FineTune(Naive):
    """Fine-tuning with the usual transfer options assembled from plugins.

    Args:
        head: names / globs of the head (default ``["classifier"]``).
        freeze: names / globs kept frozen (default none).
        lr_decay: layer-wise rate multiplier from each layer group to the one
            before it (:class:`~kta_plugins.transfer.LayerwiseLR`; 1.0 = off).
        l2sp: L2-SP strength ``alpha`` towards the starting weights (0 = off);
            ``l2sp_beta`` the L2 on the head.
        reset_head: re-initialise the head before training (default False).
        **kwargs: KTA strategy arguments.
    """

    def __init__(self, *, model: nn.Module, head: Sequence[str] = ("classifier",), freeze: Sequence[str] = (),
                 lr_decay: float = 1.0, l2sp: float = 0.0, l2sp_beta: float = 0.0, reset_head: bool = False,
                 plugins: Optional[Sequence] = None, **kwargs):
        head = _head(head)
        match_parameters(model, head, argument="head")
        check_range("lr_decay", lr_decay, 0.0, 1.0, low_inclusive=False)
        check_positive("l2sp", l2sp, strict=False)
        check_positive("l2sp_beta", l2sp_beta, strict=False)
        if check_type("reset_head", reset_head, bool):
            _reset(model, head)
        own = []
        if freeze:
            own.append(Freeze(patterns=list(freeze), exclude=head))
        if lr_decay != 1.0:
            own.append(LayerwiseLR(decay=lr_decay))
        if l2sp > 0 or l2sp_beta > 0:
            own.append(L2SP(alpha=l2sp, beta=l2sp_beta, head=head))
        super().__init__(model=model, plugins=[*own, *(plugins or [])], **kwargs)


class LPFTStrategy(Naive):
    """LP-FT (Kumar et al. 2022): ``probe_epochs`` of linear probing, then fine-tuning of
    everything at ``ft_lr_scale`` times the rate, in every experience.

    Args:
        head: names / globs of the head (default ``["classifier"]``).
        probe_epochs: probing epochs per experience; ``train_epochs`` must be larger.
        ft_lr_scale: rate multiplier of the fine-tuning phase (default 0.1).
        reset_head: re-initialise the head before training (default False).
    """

    def __init__(self, *, model: nn.Module, head: Sequence[str] = ("classifier",), probe_epochs: int = 1,
                 ft_lr_scale: float = 0.1, reset_head: bool = False, train_epochs: int = 2,
                 plugins: Optional[Sequence] = None, **kwargs):
        head = _head(head)
        match_parameters(model, head, argument="head")
        plugin = LPFT(head=head, probe_epochs=probe_epochs, ft_lr_scale=ft_lr_scale)
        if isinstance(train_epochs, int) and train_epochs <= probe_epochs:
            raise ValueError(f"train_epochs must be > probe_epochs ({probe_epochs}) for a fine-tuning phase, "
                             f"got {train_epochs}")
        if check_type("reset_head", reset_head, bool):
            _reset(model, head)
        super().__init__(model=model, train_epochs=train_epochs, plugins=[plugin, *(plugins or [])], **kwargs)


register_strategy("linear-probe", LinearProbe, help="frozen backbone, only the head trains")
register_strategy("finetune", FineTune, help="fine-tuning with optional freezing, layer-wise rates, L2-SP")
register_strategy("lpft", LPFTStrategy, help="LP-FT: linear probe, then fine-tune at a lower rate")
