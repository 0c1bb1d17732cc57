"""A tensor-batch data loader for tensor-backed Avalanche datasets.

Avalanche's loaders call ``__getitem__`` once per sample, walk the dataset tree,
then collate: on small models that costs more than the model itself. When every
leaf of an experience's dataset is a ``torch.utils.data.TensorDataset`` and no
transform is active, the whole experience can be materialised once as tensors
and batched by indexing. :func:`tensor_view` does the materialisation (it gives
exactly what Avalanche's ``__getitem__`` + collate would give: the leaf tensors,
then each data attribute used in ``__getitem__`` such as task labels), and
:class:`TensorBatchLoader` batches it.

Datasets with active transforms or non-tensor leaves return ``None`` from
:func:`tensor_view`; callers then fall back to Avalanche's own loaders.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.utils.data import TensorDataset

__all__ = ["tensor_view", "dataset_fields", "TensorBatchLoader"]


class _NotTensorBacked(Exception):
    pass


def _active(tgroups, group: str) -> bool:
    if tgroups is None:
        return False
    return tgroups.transform_groups.get(group) is not None


def _indices_tensor(indices) -> torch.Tensor:
    if isinstance(indices, torch.Tensor):
        return indices.long()
    return torch.as_tensor(list(indices), dtype=torch.long)


def _gather(node, idx: torch.Tensor, group: str) -> list[torch.Tensor]:
    """Rows ``idx`` of a FlatData tree (or leaf) as a list of tensors."""
    from avalanche.benchmarks.utils.flat_data import ConstantSequence, FlatData

    if isinstance(node, TensorDataset):
        return [t[idx] for t in node.tensors]
    if isinstance(node, ConstantSequence):
        value = torch.as_tensor(node._constant_value)
        return [value.expand(len(idx), *value.shape).clone()]
    if isinstance(node, torch.Tensor):
        return [node[idx]]
    if isinstance(node, FlatData):
        if _active(getattr(node, "_frozen_transform_groups", None), group) or _active(
            getattr(node, "_transform_groups", None), group
        ):
            raise _NotTensorBacked("active transform")
        if node._indices is not None:
            idx = _indices_tensor(node._indices)[idx]
        cum = torch.as_tensor(node._cumulative_sizes, dtype=torch.long)
        which = torch.searchsorted(cum, idx, right=True)
        out: Optional[list[torch.Tensor]] = None
        for d in torch.unique(which).tolist():
            sel = (which == d).nonzero(as_tuple=True)[0]
            local = idx[sel] - (cum[d - 1] if d > 0 else 0)
            parts = _gather(node._datasets[d], local, group)
            if out is None:
                out = [torch.empty((len(idx), *p.shape[1:]), dtype=p.dtype) for p in parts]
            if len(parts) != len(out):
                raise _NotTensorBacked("leaves with different numbers of fields")
            for o, p in zip(out, parts):
                o[sel] = p
        if out is None:
            raise _NotTensorBacked("empty")
        return out
    if isinstance(node, (list, tuple)) and all(isinstance(v, (int, float, bool)) for v in node[:8]):
        return [torch.as_tensor(node)[idx]]
    raise _NotTensorBacked(type(node).__name__)


def tensor_view(dataset) -> Optional[list[torch.Tensor]]:
    """Materialise an Avalanche dataset as the list of tensors its collated batch would hold.

    Returns ``[x, y, ..., task_labels]`` (row ``i`` = what ``dataset[i]`` gives,
    collated), or ``None`` when the dataset is not tensor-backed (a non-tensor
    leaf, or an active transform in the current group).
    """
    flat = getattr(dataset, "_flat_data", None)
    if flat is None or len(dataset) == 0:
        return None
    group = flat._transform_groups.current_group
    idx = torch.arange(len(dataset))
    try:
        fields = _gather(flat, idx, group)
        for da in dataset._data_attributes.values():
            if da.use_in_getitem:
                (values,) = _gather(da.data, idx, group)
                fields.append(values)
    except _NotTensorBacked:
        return None
    return fields


def dataset_fields(dataset, limit: Optional[int] = None) -> list[torch.Tensor]:
    """Every sample of ``dataset`` as a list of tensors ``[x, y, ...]``: :func:`tensor_view` for a
    tensor-backed Avalanche dataset, a ``TensorDataset``'s tensors, else ``dataset[i]`` stacked field by
    field (then the first ``limit`` samples only, when given).
    """
    fields = tensor_view(dataset)
    if fields is not None:
        return fields
    if hasattr(dataset, "tensors"):
        return list(dataset.tensors)
    n = len(dataset) if limit is None else min(len(dataset), limit)
    items = [dataset[i] for i in range(n)]
    return [torch.stack([torch.as_tensor(it[k]) for it in items]) for k in range(len(items[0]))]


class TensorBatchLoader:
    """Batches a list of equal-length tensors by indexing, like a ``DataLoader``.

    Args:
        tensors: fields of the dataset (``[x, y, t]``), first dimension = samples.
        batch_size: minibatch size (> 0).
        shuffle: draw a new permutation at every ``iter()`` from ``generator``.
        generator: ``torch.Generator`` for the permutations (seeded by the strategy).
        drop_last: drop the last incomplete batch.
        rank, world_size: data-parallel training: this process takes every
            ``world_size``-th sample (from ``rank``) of each epoch's order, padded
            by wrapping to a multiple of ``world_size`` as torch's
            ``DistributedSampler`` does; every rank must use the same generator seed.
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        batch_size: int,
        shuffle: bool = False,
        generator: Optional[torch.Generator] = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank!r}, world_size={world_size!r}")
        self.tensors = list(tensors)
        self.rank, self.world_size = rank, world_size
        self.n = -(-len(self.tensors[0]) // world_size)  # samples of this rank
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        n, bs = self.n, self.batch_size
        if self.world_size > 1:
            total = len(self.tensors[0])
            order = torch.randperm(total, generator=self.generator) if self.shuffle else torch.arange(total)
            padded = order.repeat(-(-n * self.world_size // total))[: n * self.world_size]
            order = padded[self.rank :: self.world_size]
            fields = [t[order] for t in self.tensors]
        elif self.shuffle:
            order = torch.randperm(n, generator=self.generator)
            fields = [t[order] for t in self.tensors]
        else:
            fields = self.tensors
        stop = n - n % bs if self.drop_last else n
        for start in range(0, stop, bs):
            yield [f[start : start + bs] for f in fields]
