"""Meta-SGD over learn2learn's ``MetaSGD`` wrapper."""
from __future__ import annotations

from ._l2l import l2l
from torch import nn

from strategies.registry import register_strategy

from .base import command_line_signature
from .maml import MAML

__all__ = ["MetaSGD"]


@command_line_signature
class MetaSGD(MAML):
    """Meta-SGD (Li, Zhou, Chen & Li, 2017): MAML with a learned per-parameter inner learning rate.

    Inner loop: ``theta'_i = theta - alpha (elementwise *) grad_theta L_support(f_theta)`` where
    ``alpha`` has the shape of ``theta`` and is meta-learned with it by the outer
    loop (``(theta, alpha) <- (theta, alpha) - beta * grad sum_i L_query(f_theta'_i)``).
    ``strategy.model`` is learn2learn's ``MetaSGD`` wrapper: ``strategy.model.lrs``
    are the learned rates, added to the optimizer by Avalanche's ``make_optimizer``.

    Args: as :class:`strategies.meta.maml.MAML`; ``inner_lr`` (default 0.4) initialises every ``alpha``.

    Example:
        >>> s = MetaSGD(model=net, optimizer=torch.optim.Adam(net.parameters(), 1e-3), inner_lr=0.4)
        >>> s.train(bm.train_stream[0]); s.evaluate_episodes(bm.test_stream[-1])
    """

    def _wrap(self, model: nn.Module) -> nn.Module:
        return l2l.algorithms.MetaSGD(model, lr=self.inner_lr, first_order=self.first_order)

    def _adapt(self, support_x, support_y, steps, first_order=None):
        from torch.nn import functional as F

        learner = self.model.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(support_x), support_y), first_order=first_order)
        return learner


register_strategy("metasgd", MetaSGD, help="Meta-SGD: MAML with learned per-parameter inner learning rates")
