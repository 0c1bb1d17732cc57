"""Matching networks with cosine attention."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from kta_plugins.base import check_positive, check_type
from strategies.registry import register_strategy

from .base import EpisodicStrategy, embedding_of, command_line_signature

__all__ = ["MatchingNet", "cosine_attention"]


def cosine_attention(query: torch.Tensor, support: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``a(x, x_i) = softmax_i(scale * cos(f(x), g(x_i)))`` -> ``(n_query, n_support)``."""
    sim = F.normalize(query, dim=1) @ F.normalize(support, dim=1).T
    return torch.softmax(scale * sim, dim=1)


@command_line_signature
class MatchingNet(EpisodicStrategy):
    """Matching networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016).

    A query ``x`` is labelled by attention over the support set,
    ``P(y | x, S) = sum_i a(x, x_i) y_i`` with the cosine attention
    ``a(x, x_i) = softmax_i(s * cos(f(x), f(x_i)))`` (one-hot ``y_i``), and the loss
    is ``-log P(y_true | x, S)``. The query and support embeddings share ``f``
    (the paper's full-context embeddings, LSTMs over the support set, are not
    implemented). ``s`` sharpens the softmax (the paper uses ``s = 1``; cosines in
    [-1, 1] then give a very flat attention).

    Args:
        model: the network (embedding: ``model.features`` when it has one, see ``features``).
        optimizer: optimizer over ``model``'s parameters.
        scale: ``s`` (default 10.0).
        features: "auto" (default), a submodule name, or None (the whole model).
        **kwargs: :class:`strategies.meta.base.EpisodicStrategy` arguments.

    Example:
        >>> s = MatchingNet(model=Conv4((1, 28, 28), 5), optimizer=opt, scale=10.0)
        >>> s.train(bm.train_stream[0]); s.evaluate_episodes(bm.test_stream[-1])
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, scale: float = 10.0,
                 features: Optional[str] = "auto", **kwargs):
        check_type("model", model, nn.Module)
        self.scale = check_positive("scale", scale)
        check_type("features", features, str, allow_none=True)
        self.embedding = embedding_of(model, features)
        super().__init__(model=model, optimizer=optimizer, **kwargs)

    def adapt(self, support_x, support_y):
        n = int(support_y.max()) + 1
        return self.embedding(support_x).flatten(1), F.one_hot(support_y, n).to(support_x.dtype)

    def predict(self, state, query_x):
        support, onehot = state
        attn = cosine_attention(self.embedding(query_x).flatten(1), support, self.scale)
        return torch.log((attn @ onehot).clamp_min(1e-12))  # log P(y | x, S)

    def task_loss(self, state, query_x, query_y):
        logp = self.predict(state, query_x)
        return F.nll_loss(logp, query_y), logp


register_strategy("matchingnet", MatchingNet, help="matching networks: cosine attention over the support set")
