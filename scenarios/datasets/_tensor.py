"""Tensor-backed datasets: the common currency of KTA's embedded datasets."""
from __future__ import annotations

import torch
from torch.utils.data import TensorDataset


class TensorClassificationDataset(TensorDataset):
    """A ``TensorDataset`` of ``(x, y)`` whose integer labels Avalanche can read.

    Avalanche looks for a ``targets`` attribute to build class timelines; KTA's
    fast data path recognises any ``TensorDataset`` leaf and batches it by
    tensor indexing instead of per-sample ``__getitem__`` + collate.

    Args:
        x: inputs, first dimension indexes samples.
        y: integer class labels, shape ``(n,)``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        x = torch.as_tensor(x)
        y = torch.as_tensor(y, dtype=torch.long)
        if y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"x and y must have the same number of samples and y must be 1-D, "
                f"got x {tuple(x.shape)} and y {tuple(y.shape)}"
            )
        super().__init__(x, y)
        self.targets = y

    @property
    def x(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def y(self) -> torch.Tensor:
        return self.tensors[1]

    @property
    def classes(self) -> list[int]:
        return sorted(int(c) for c in torch.unique(self.y))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, x={tuple(self.x.shape[1:])}, classes={len(self.classes)})"
