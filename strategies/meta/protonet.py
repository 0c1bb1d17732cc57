"""Prototypical networks."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from kta_plugins.base import check_type
from strategies.registry import register_strategy

from .base import EpisodicStrategy, embedding_of, command_line_signature

__all__ = ["ProtoNet", "prototypes"]


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_ways: Optional[int] = None) -> torch.Tensor:
    """Class prototypes ``c_k = mean of the embeddings of class k`` -> ``(n_ways, dim)``."""
    n = int(labels.max()) + 1 if n_ways is None else n_ways
    sums = torch.zeros(n, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=n).clamp_min(1).to(embeddings.dtype)
    return sums / counts[:, None]


@command_line_signature
class ProtoNet(EpisodicStrategy):
    """Prototypical networks (Snell, Swersky & Zemel, NeurIPS 2017).

    With ``f`` the embedding network, each class's prototype is the mean support
    embedding ``c_k = 1/|S_k| sum_{x in S_k} f(x)``; a query is classified by a
    softmax over negative squared Euclidean distances,
    ``p(y = k | x) = softmax_k(-||f(x) - c_k||^2)``, and the loss is the query
    cross-entropy (``f`` is trained end to end, no inner loop).

    Args:
        model: the network; its embedding is ``model.features`` when it has one
            (KTA's backbones do), else its output (``features="auto"``).
        optimizer: optimizer over ``model``'s parameters.
        features: submodule used as ``f``: "auto" (default), a submodule name, or None (the whole model).
        **kwargs: :class:`strategies.meta.base.EpisodicStrategy` arguments.

    Example:
        >>> s = ProtoNet(model=Conv4((1, 28, 28), 5), optimizer=opt, iterations_per_epoch=500)
        >>> s.train(bm.train_stream[0]); s.evaluate_episodes(bm.test_stream[-1])
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, features: Optional[str] = "auto",
                 **kwargs):
        check_type("model", model, nn.Module)
        check_type("features", features, str, allow_none=True)
        self.embedding = embedding_of(model, features)
        super().__init__(model=model, optimizer=optimizer, **kwargs)

    def embed(self, x):
        return self.embedding(x).flatten(1)

    def adapt(self, support_x, support_y):
        return prototypes(self.embed(support_x), support_y)

    def predict(self, protos, query_x):
        q = self.embed(query_x)
        return -torch.cdist(q, protos).pow(2)


register_strategy("protonet", ProtoNet, help="prototypical networks: nearest class-mean embedding")
