"""MAML and first-order MAML (FOMAML) over learn2learn's ``MAML`` wrapper."""
from __future__ import annotations

from typing import Optional

from ._l2l import l2l
import torch
from torch import nn
from torch.nn import functional as F

from kta_plugins.base import check_int, check_positive, check_type
from strategies.registry import register_strategy

from .base import EpisodicStrategy, GradientAdaptation, command_line_signature

__all__ = ["MAML", "FOMAML"]


@command_line_signature
class MAML(GradientAdaptation, EpisodicStrategy):
    """Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017), on learn2learn's ``MAML``.

    Inner loop (per task, on the support set, ``adaptation_steps`` times):
    ``theta'_i = theta - alpha * grad_theta L_support(f_theta)``. Outer loop (the
    meta-update, on the query sets of the meta-batch):
    ``theta <- theta - beta * grad_theta sum_i L_query(f_theta'_i)``, through the
    inner updates (second order) unless ``first_order``. ``beta`` is the
    optimizer's learning rate. ``strategy.model`` is the learn2learn wrapper
    (``strategy.model.module`` is your network, whose outputs must be ``n_ways``).

    Args:
        model: a classifier with ``n_ways`` outputs.
        optimizer: the outer (meta) optimizer over ``model``'s parameters.
        inner_lr: ``alpha`` (default 0.4).
        adaptation_steps: inner steps in meta-training (default 1).
        test_adaptation_steps: inner steps at evaluation (default: ``adaptation_steps``).
        first_order: drop the second-order terms (FOMAML) (default False).
        **kwargs: :class:`strategies.meta.base.EpisodicStrategy` arguments
            (``n_ways``, ``k_shots``, ``q_queries``, ``meta_batch_size``, ``iterations_per_epoch``,
            ``eval_episodes``, ``train_epochs``, ``seed``, ...).

    Example:
        >>> bm = SCENARIOS.build("glyphs-5way-1shot")
        >>> net = Conv4((1, 28, 28), 5)
        >>> s = MAML(model=net, optimizer=torch.optim.Adam(net.parameters(), 1e-3), inner_lr=0.4, meta_batch_size=4)
        >>> s.train(bm.train_stream[0])
        >>> s.evaluate_episodes(bm.test_stream[bm.unseen_index])  # {"accuracy": ..., "ci95": ...}
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, inner_lr: float = 0.4,
                 adaptation_steps: int = 1, test_adaptation_steps: Optional[int] = None, first_order: bool = False,
                 **kwargs):
        check_type("model", model, nn.Module)
        self.inner_lr = check_positive("inner_lr", inner_lr)
        self.adaptation_steps = check_int("adaptation_steps", adaptation_steps, 1)
        self.test_adaptation_steps = check_int(
            "test_adaptation_steps", adaptation_steps if test_adaptation_steps is None else test_adaptation_steps, 1)
        self.first_order = check_type("first_order", first_order, bool)
        super().__init__(model=self._wrap(model), optimizer=optimizer, **kwargs)

    def _wrap(self, model: nn.Module) -> nn.Module:
        return l2l.algorithms.MAML(model, lr=self.inner_lr, first_order=self.first_order, allow_unused=True)

    def _adapt(self, support_x, support_y, steps: int, first_order: Optional[bool] = None):
        learner = self.model.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(support_x), support_y), first_order=first_order)
        return learner

    def predict(self, learner, query_x):
        return learner(query_x)


@command_line_signature
class FOMAML(MAML):
    """First-order MAML (Finn et al. 2017, section 5.2): :class:`MAML` with ``first_order=True``.

    The meta-gradient is the query-loss gradient at the adapted weights,
    ``sum_i grad_theta'_i L_query(f_theta'_i)``, ignoring the Hessian terms.
    Same arguments as :class:`MAML` (``first_order`` is fixed to True).
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, inner_lr: float = 0.4,
                 adaptation_steps: int = 1, test_adaptation_steps: Optional[int] = None, **kwargs):
        kwargs.pop("first_order", None)
        super().__init__(model=model, optimizer=optimizer, inner_lr=inner_lr, adaptation_steps=adaptation_steps,
                         test_adaptation_steps=test_adaptation_steps, first_order=True, **kwargs)


register_strategy("maml", MAML, help="MAML (second order), few-shot meta-learning over learn2learn")
register_strategy("fomaml", FOMAML, help="first-order MAML, few-shot meta-learning over learn2learn")
