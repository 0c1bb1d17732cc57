"""Siamese networks for one-shot classification."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from kta_plugins.base import check_int, check_type
from strategies.registry import register_strategy

from .base import EpisodicStrategy, command_line_signature, embedding_and_dim

__all__ = ["Siamese", "SiameseModel", "sample_pairs"]


class SiameseModel(nn.Module):
    """Twin embedding ``f`` and the weighted L1 head: ``logit(x1, x2) = sum_j alpha_j |f(x1)_j - f(x2)_j| + b``."""

    def __init__(self, embedding: nn.Module, dim: int):
        super().__init__()
        self.embedding = embedding
        self.head = nn.Linear(dim, 1)

    def forward(self, x):
        return self.embedding(x)

    def pair_logits(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Logits of "same class" for embedding pairs broadcast against each other (last dim = features)."""
        return self.head((e1 - e2).abs()).squeeze(-1)

    def probability(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``p(same | x1, x2) = sigmoid(logit)`` for aligned batches ``x1[i], x2[i]``; symmetric in its arguments."""
        return torch.sigmoid(self.pair_logits(self.embedding(x1).flatten(1), self.embedding(x2).flatten(1)))


def sample_pairs(labels: torch.Tensor, n_pairs: int, generator: Optional[torch.Generator] = None):
    """``n_pairs`` same-class and ``n_pairs`` different-class index pairs ``(i, j)``, ``i != j``.

    Returns ``(first, second, same)``: index tensors and the 0/1 targets.
    """
    n = len(labels)
    same_mat = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=labels.device)
    pos = (same_mat & ~eye).nonzero()
    neg = (~same_mat).nonzero()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("sample_pairs needs at least two samples of one class and two classes")
    p = pos[torch.randint(len(pos), (n_pairs,), generator=generator)]
    q = neg[torch.randint(len(neg), (n_pairs,), generator=generator)]
    both = torch.cat([p, q])
    target = torch.cat([torch.ones(n_pairs), torch.zeros(n_pairs)]).to(labels.device)
    return both[:, 0], both[:, 1], target


@command_line_signature
class Siamese(EpisodicStrategy):
    """Siamese neural networks for one-shot recognition (Koch, Zemel & Salakhutdinov, ICML-DLW 2015).

    Twin networks share ``f``; a pair's "same class" probability is
    ``p(x1, x2) = sigmoid(sum_j alpha_j |f(x1)_j - f(x2)_j| + b)`` (weighted L1
    distance, learned ``alpha``, ``b``), symmetric in ``x1, x2``. Training samples
    ``pairs_per_episode`` same-class and as many different-class pairs among each
    episode's samples (support and query) and minimises their binary
    cross-entropy. A query is classified as the class whose support samples give
    the highest mean logit (with one shot, the highest ``p``: the paper's rule).

    Args:
        model: the network (``f``: ``model.features`` when it has one, see ``features``).
        optimizer: optimizer over ``model``'s parameters (the L1 head's are added at the first experience).
        pairs_per_episode: same-class pairs (and as many different-class pairs) per episode (default 64).
        features: "auto" (default), a submodule name, or None (the whole model).
        **kwargs: :class:`strategies.meta.base.EpisodicStrategy` arguments.

    Example:
        >>> s = Siamese(model=Conv4((1, 28, 28), 5), optimizer=opt, pairs_per_episode=64)
        >>> s.train(bm.train_stream[0]); s.evaluate_episodes(bm.test_stream[-1])
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, pairs_per_episode: int = 64,
                 features: Optional[str] = "auto", **kwargs):
        check_type("model", model, nn.Module)
        self.pairs_per_episode = check_int("pairs_per_episode", pairs_per_episode, 1)
        check_type("features", features, str, allow_none=True)
        embedding, dim = embedding_and_dim(model, features, "Siamese")
        super().__init__(model=SiameseModel(embedding, dim), optimizer=optimizer, **kwargs)
        self._pair_generator = torch.Generator().manual_seed(self.seed)

    def embed(self, x):
        return self.model.embedding(x).flatten(1)

    def adapt(self, support_x, support_y):
        return self.embed(support_x), support_y

    def predict(self, state, query_x):
        support, labels = state
        n = int(labels.max()) + 1
        logits = self.model.pair_logits(self.embed(query_x)[:, None, :], support[None, :, :])  # (Q, S)
        sums = torch.zeros(len(logits), n, dtype=logits.dtype, device=logits.device)
        sums.index_add_(1, labels, logits)
        return sums / torch.bincount(labels, minlength=n).to(logits.dtype)

    def task_loss(self, state, query_x, query_y):
        support, s_labels = state
        emb = torch.cat([support, self.embed(query_x)])
        labels = torch.cat([s_labels, query_y])
        i, j, target = sample_pairs(labels.cpu(), self.pairs_per_episode, self._pair_generator)
        i, j, target = i.to(emb.device), j.to(emb.device), target.to(emb.device)
        loss = F.binary_cross_entropy_with_logits(self.model.pair_logits(emb[i], emb[j]), target)
        with torch.no_grad():
            scores = self.predict(state, query_x)
        return loss, scores


register_strategy("siamese", Siamese, help="siamese networks: pair sampling, weighted L1 distance + sigmoid")
