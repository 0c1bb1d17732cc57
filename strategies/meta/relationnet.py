"""Relation networks."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from kta_plugins.base import check_int, check_type
from strategies.registry import register_strategy

from .base import EpisodicStrategy, command_line_signature, embedding_and_dim
from .protonet import prototypes

__all__ = ["RelationNet", "RelationModel"]


class RelationModel(nn.Module):
    """The embedding network ``f`` and the relation module ``g`` of a relation network, as one module."""

    def __init__(self, embedding: nn.Module, relation: nn.Module):
        super().__init__()
        self.embedding = embedding
        self.relation = relation

    def forward(self, x):
        return self.embedding(x)


@command_line_signature
class RelationNet(EpisodicStrategy):
    """Relation networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018).

    Each class is represented by the sum of its support embeddings,
    ``e_k = sum_{x in S_k} f(x)``; a learned relation module scores each pair,
    ``r_{q,k} = g([f(x_q), e_k])`` in (0, 1) (an MLP ending in a sigmoid), and
    the loss is the paper's mean squared error to the one-hot target,
    ``mean_{q,k} (r_{q,k} - 1[y_q = k])^2``. Embeddings here are vectors, so ``g``
    is an MLP on the concatenation, Linear-BatchNorm-ReLU-Linear-sigmoid (the
    paper's ``g`` is convolutional, with BatchNorm, on feature maps; without the
    BatchNorm, ``g`` collapsed to a constant output in our runs). ``strategy.model`` holds ``f`` and ``g`` (so Avalanche's
    ``make_optimizer`` adds ``g``'s parameters to the optimizer).

    Args:
        model: the network (``f``: ``model.features`` when it has one, see ``features``).
        optimizer: optimizer over ``model``'s parameters (``g``'s are added at the first experience).
        hidden: width of ``g``'s hidden layer (default 64).
        features: "auto" (default), a submodule name, or None (the whole model).
        **kwargs: :class:`strategies.meta.base.EpisodicStrategy` arguments.

    Example:
        >>> s = RelationNet(model=Conv4((1, 28, 28), 5), optimizer=opt, hidden=64)
        >>> s.train(bm.train_stream[0]); s.evaluate_episodes(bm.test_stream[-1])
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, hidden: int = 64,
                 features: Optional[str] = "auto", **kwargs):
        check_type("model", model, nn.Module)
        self.hidden = check_int("hidden", hidden, 1)
        check_type("features", features, str, allow_none=True)
        embedding, dim = embedding_and_dim(model, features, "RelationNet")
        relation = nn.Sequential(nn.Linear(2 * dim, self.hidden), nn.BatchNorm1d(self.hidden), nn.ReLU(),
                                 nn.Linear(self.hidden, 1))
        super().__init__(model=RelationModel(embedding, relation), optimizer=optimizer, **kwargs)

    def embed(self, x):
        return self.model.embedding(x).flatten(1)

    def adapt(self, support_x, support_y):
        n = int(support_y.max()) + 1
        k = torch.bincount(support_y, minlength=n).to(support_x.dtype)
        return prototypes(self.embed(support_x), support_y, n) * k[:, None]  # per-class sums

    def predict(self, sums, query_x):
        """Relation logits ``(n_query, n_ways)`` (sigmoid of them = relation scores)."""
        q = self.embed(query_x)
        Q, N, D = len(q), len(sums), q.shape[1]
        pairs = torch.cat([q[:, None, :].expand(Q, N, D), sums[None, :, :].expand(Q, N, D)], dim=2)
        return self.model.relation(pairs.reshape(Q * N, 2 * D)).view(Q, N)

    def task_loss(self, sums, query_x, query_y):
        logits = self.predict(sums, query_x)
        target = F.one_hot(query_y, logits.shape[1]).to(logits.dtype)
        return F.mse_loss(torch.sigmoid(logits), target), logits


register_strategy("relationnet", RelationNet, help="relation networks: a learned relation module scores pairs")
