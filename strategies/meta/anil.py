"""ANIL: almost no inner loop (MAML adapting the head only)."""
from __future__ import annotations

from typing import Optional

from ._l2l import l2l
import torch
from torch import nn
from torch.nn import functional as F

from kta_plugins.base import check_int, check_positive, check_type
from strategies.registry import register_strategy

from .base import EpisodicStrategy, GradientAdaptation, embedding_of, command_line_signature

__all__ = ["ANIL"]


@command_line_signature
class ANIL(GradientAdaptation, EpisodicStrategy):
    """ANIL (Raghu, Raghu, Bengio & Vinyals, ICLR 2020): MAML whose inner loop adapts only the head.

    With ``phi`` the body (``features``) and ``w`` the head (``head``), the inner
    loop is ``w'_i = w - alpha * grad_w L_support(w; phi(x))`` (``adaptation_steps``
    times) and the outer loop updates both, ``(phi, w) <- (phi, w) - beta *
    grad sum_i L_query(w'_i; phi(x))``, second order through the head's updates.
    The head is wrapped in learn2learn's ``MAML``; ``strategy.model`` stays your network.

    Args:
        model: a network with a body and a head submodule (KTA's MLP/CNN1d/Conv4: ``features``, ``classifier``).
        optimizer: the outer optimizer over ``model``'s parameters.
        inner_lr: ``alpha`` (default 0.1).
        adaptation_steps: inner steps on the head (default 5).
        test_adaptation_steps: inner steps at evaluation (default ``adaptation_steps``).
        features: name of the body submodule (default "features").
        head: name of the head submodule (default "classifier").
        **kwargs: :class:`strategies.meta.base.EpisodicStrategy` arguments.

    Example:
        >>> s = ANIL(model=Conv4((1, 28, 28), 5), optimizer=opt, inner_lr=0.1, adaptation_steps=5)
        >>> s.train(bm.train_stream[0]); s.evaluate_episodes(bm.test_stream[-1])
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, inner_lr: float = 0.1,
                 adaptation_steps: int = 5, test_adaptation_steps: Optional[int] = None, features: str = "features",
                 head: str = "classifier", **kwargs):
        check_type("model", model, nn.Module)
        self.inner_lr = check_positive("inner_lr", inner_lr)
        self.adaptation_steps = check_int("adaptation_steps", adaptation_steps, 1)
        self.test_adaptation_steps = check_int(
            "test_adaptation_steps", adaptation_steps if test_adaptation_steps is None else test_adaptation_steps, 1)
        check_type("features", features, str)
        check_type("head", head, str)
        self._body = embedding_of(model, features)
        try:
            head_module = embedding_of(model, head)
        except ValueError as e:
            raise ValueError(str(e).replace("features:", "head:")) from None
        if head_module is self._body:
            raise ValueError("head and features must be different submodules")
        # Not a submodule of the strategy's model: wraps the same parameter objects.
        self._head = l2l.algorithms.MAML(head_module, lr=self.inner_lr)
        super().__init__(model=model, optimizer=optimizer, **kwargs)

    def _adapt(self, support_x, support_y, steps, first_order=None):
        feats = self._body(support_x)
        learner = self._head.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(feats), support_y), first_order=first_order)
        return learner

    def predict(self, learner, query_x):
        return learner(self._body(query_x))


register_strategy("anil", ANIL, help="ANIL: MAML adapting only the head in the inner loop")
