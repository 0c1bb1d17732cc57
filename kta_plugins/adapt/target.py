"""How unlabeled target data reaches the domain-adaptation plugins.

Three sources, in this order of precedence:

1. ``target=`` given to the plugin (or to the ``DomainAdaptation`` strategy):
   a tensor of inputs, a dataset whose items start with the input (labels, if
   any, are never read), or an Avalanche experience;
2. the benchmark the current experience comes from, when it carries an
   unlabeled target set (``bm.target_unlabeled``, as the scenarios built by
   :func:`scenarios.domains.source_target` do);
3. nothing: a ``ValueError`` naming the plugin, raised before the first step.

Every training iteration, :class:`TargetSampler` draws a target minibatch
(without replacement within a pass, reshuffled every pass) from its own seeded
generator, whose state is part of the plugin's ``state_dict``.

Unlabeled training samples (a stream whose later domains have no labels) carry
the label :data:`UNLABELED` (``-1``); :class:`MaskedCrossEntropy` skips them.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNLABELED", "TargetSampler", "as_inputs", "find_target", "MaskedCrossEntropy"]

#: label of a training sample whose class is unknown
UNLABELED = -1


def as_inputs(data, argument: str = "target") -> torch.Tensor:
    """The input tensor of ``data``: a tensor, a ``TensorDataset``-like dataset, an experience, or a dataset."""
    if isinstance(data, (str, bytes)):
        raise TypeError(f"{argument} must be a tensor of inputs, a dataset or an experience, got str {data!r}")
    if isinstance(data, torch.Tensor):
        x = data
    elif hasattr(data, "dataset") and hasattr(data, "current_experience"):  # an Avalanche experience
        return as_inputs(data.dataset, argument)
    elif hasattr(data, "tensors"):
        x = data.tensors[0]
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        from scenarios.loaders import tensor_view

        fields = tensor_view(data) if hasattr(data, "_flat_data") else None
        if fields is not None:
            x = fields[0]
        else:
            if len(data) == 0:
                raise ValueError(f"{argument} is empty")
            items = [data[i] for i in range(len(data))]
            x = torch.stack([torch.as_tensor(it[0] if isinstance(it, (tuple, list)) else it) for it in items])
    else:
        raise TypeError(f"{argument} must be a tensor of inputs, a dataset or an experience, "
                        f"got {type(data).__name__}")
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{argument} must hold at least one sample of shape (n, ...), got shape {tuple(x.shape)}")
    return x.float() if not x.is_floating_point() else x


def find_target(strategy) -> Optional[torch.Tensor]:
    """The benchmark's unlabeled target inputs (``target_unlabeled``) for the current experience, if any."""
    exp = getattr(strategy, "experience", None)
    try:
        bm = exp.origin_stream.benchmark
    except Exception:  # noqa: BLE001 - an experience not built from a benchmark
        return None
    t = getattr(bm, "target_unlabeled", None)
    return None if t is None else as_inputs(t, "benchmark.target_unlabeled")


class TargetSampler:
    """Seeded minibatches of target inputs, one per training iteration.

    Args:
        x: target inputs ``(n, ...)``.
        seed: seed of the shuffling.

    Example:
        >>> s = TargetSampler(torch.randn(100, 3), seed=0)
        >>> xt = s.draw(32)
    """

    def __init__(self, x: torch.Tensor, seed: int = 0):
        self.x = x
        self.generator = torch.Generator().manual_seed(int(seed))
        self._order = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def draw(self, n: int) -> torch.Tensor:
        return self.x[self.draw_indices(n)]

    def draw_indices(self, n: int) -> torch.Tensor:
        """Indices of the next ``n`` samples."""
        idx = []
        while n > 0:
            if self._pos >= len(self._order):
                self._order = torch.randperm(len(self.x), generator=self.generator)
                self._pos = 0
            take = self._order[self._pos:self._pos + n]
            self._pos += len(take)
            n -= len(take)
            idx.append(take)
        return torch.cat(idx)

    def get_state(self) -> dict:
        return {"rng": self.generator.get_state(), "order": self._order.clone(), "pos": self._pos}

    def set_state(self, state: dict) -> None:
        self.generator.set_state(state["rng"])
        self._order = state["order"].clone()
        self._pos = int(state["pos"])


class MaskedCrossEntropy(nn.Module):
    """Cross-entropy over the labeled samples of a batch (label ``>= 0``); ``0`` (with a graph) when none is.

    Lets a strategy train on experiences whose labels are absent
    (:data:`UNLABELED`): only the plugins' alignment losses act on them.
    """

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        keep = y != UNLABELED
        if bool(keep.all()):
            return F.cross_entropy(logits, y)
        if not bool(keep.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[keep], y[keep])
