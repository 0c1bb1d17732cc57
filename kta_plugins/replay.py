"""Experience replay on tensors: Avalanche's ``ReplayPlugin`` and storage policies, the same samples.

Avalanche 0.6 keeps a replay buffer as nested ``AvalancheDataset`` subsets and concatenations, rebuilds
them after every experience and builds a ``ReplayDataLoader`` over them before the next one: about 2 ms
per experience of dataset bookkeeping on split digits, a tenth of a small model's training time. When
the experiences are tensor-backed (every KTA stream), the classes below hold the buffer as tensors as
well and batch it directly:

* :class:`TensorReservoirBuffer`, :class:`TensorExperienceBalancedBuffer`,
  :class:`TensorClassBalancedBuffer`: Avalanche's ``ReservoirSamplingBuffer``, ``ExperienceBalancedBuffer``
  and ``ClassBalancedBuffer`` with the same random draws (``torch.rand`` weights from torch's global
  generator, in the same order) and so the same samples in the same order. ``buffer`` is still an
  ``AvalancheDataset`` (a subset of the experiences' datasets, built when first read); data that is not
  tensor-backed is handled by Avalanche's code.
* :class:`Replay`: Avalanche's ``ReplayPlugin``; with a tensor-held buffer and no task balancing it gives
  the strategy the tensor loader that Avalanche's ``ReplayDataLoader`` would be converted to (current
  data and memory batches joined, the memory cycled), without building the Avalanche loader.

The ``replay`` plugin of the ``kta`` command (:func:`kta_plugins.registry.replay`) is built from these.

Example:
    >>> from kta_plugins.replay import Replay, TensorExperienceBalancedBuffer
    >>> plugin = Replay(mem_size=200, storage_policy=TensorExperienceBalancedBuffer(max_size=200))
    >>> strategy = Naive(model=model, optimizer=opt, plugins=[plugin])
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional

import torch
from avalanche.benchmarks.utils import concat_datasets
from avalanche.training.plugins import ReplayPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer, ExperienceBalancedBuffer, \
    ReservoirSamplingBuffer

from scenarios.loaders import TensorMultiLoader, collates_by_default, same_fields, tensor_view

__all__ = ["Replay", "TensorReservoirBuffer", "TensorExperienceBalancedBuffer", "TensorClassBalancedBuffer",
           "memory_fields"]


class TensorReservoirBuffer(ReservoirSamplingBuffer):
    """Avalanche's ``ReservoirSamplingBuffer`` (a random ``max_size`` of everything seen: each sample
    gets a ``torch.rand`` weight, the largest weights stay) holding its samples as tensors.

    ``fields`` is the buffer as ``[x, y, ..., t]`` tensors (None when it holds data that is not
    tensor-backed: Avalanche's code then runs); ``buffer`` the same samples as an ``AvalancheDataset``.
    """

    def __init__(self, max_size: int):
        self.fields: Optional[List[torch.Tensor]] = None
        self._sources: list = []  # the datasets the samples come from
        self._origin = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))  # (source, index)
        super().__init__(max_size)
        self._dataset = self._buffer  # (Avalanche's ExemplarsBuffer sets ``_buffer`` directly: empty)

    @property
    def buffer(self):
        if self._dataset is None:  # tensor-held: the same samples as a subset of their datasets
            lengths = torch.tensor([0] + [len(d) for d in self._sources[:-1]]).cumsum(0)
            source, index = self._origin
            self._dataset = concat_datasets(self._sources).subset((lengths[source] + index).tolist())
        return self._dataset

    @buffer.setter
    def buffer(self, value):  # Avalanche's code sets a dataset: from now on it holds that
        self._dataset, self.fields = value, None
        self._sources, self._origin = [], (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))

    def _empty(self) -> bool:
        return self.fields is None and len(self._dataset) == 0

    def update_from_dataset(self, new_data):
        self.add(new_data, None, None)

    def add(self, new_data, fields, index) -> None:
        """Avalanche's update with ``new_data`` (or its rows ``index``, given as ``fields``)."""
        if fields is None and len(new_data):
            fields, index = tensor_view(new_data), torch.arange(len(new_data))
        old = self.fields if self.fields is not None else ([f[:0] for f in fields] if fields and self._empty()
                                                           else None)
        if fields is None or old is None or not same_fields(old, fields):
            data = new_data if index is None or len(index) == len(new_data) else new_data.subset(index.tolist())
            return super().update_from_dataset(data)
        new_weights = torch.rand(len(index))  # Avalanche's draws, in its order
        cat_weights = torch.cat([new_weights, self._buffer_weights])
        sorted_weights, sorted_idxs = cat_weights.sort(descending=True)
        keep = sorted_idxs[: self.max_size]
        fields = [torch.cat([a, b]).index_select(0, keep) for a, b in zip(fields, old)]
        source = torch.cat([torch.zeros(len(index), dtype=torch.long), self._origin[0] + 1])
        origin = torch.cat([index, self._origin[1]])
        self._hold(fields, [new_data] + self._sources, source[keep], origin[keep])
        self._buffer_weights = sorted_weights[: self.max_size]

    def _hold(self, fields, sources, source, index):
        used, source = torch.unique(source, return_inverse=True)  # keep the sources still referenced
        self.fields, self._sources, self._origin, self._dataset = fields, [sources[i] for i in used.tolist()], \
            (source, index), None

    def resize(self, strategy, new_size):
        self.max_size = new_size
        if self.fields is None:
            return super().resize(strategy, new_size)
        if len(self.fields[0]) <= new_size:
            return
        self._hold([f[:new_size] for f in self.fields], self._sources, self._origin[0][:new_size],
                   self._origin[1][:new_size])
        self._buffer_weights = self._buffer_weights[:new_size]


class TensorExperienceBalancedBuffer(ExperienceBalancedBuffer):
    """Avalanche's ``ExperienceBalancedBuffer`` (``max_size`` split evenly over the experiences seen,
    each part a reservoir sample of its experience) on :class:`TensorReservoirBuffer` groups."""

    def post_adapt(self, agent, exp):  # Avalanche's, with the tensor group buffer
        self._num_exps += 1
        lens = self.get_group_lengths(self._num_exps)
        new_buffer = TensorReservoirBuffer(lens[-1])
        new_buffer.update_from_dataset(exp.dataset)
        self.buffer_groups[self._num_exps - 1] = new_buffer
        for ll, b in zip(lens, self.buffer_groups.values()):
            b.resize(agent, ll)


class TensorClassBalancedBuffer(ClassBalancedBuffer):
    """Avalanche's ``ClassBalancedBuffer`` (``max_size`` split evenly over the classes seen, each part a
    reservoir sample of its class) on :class:`TensorReservoirBuffer` groups."""

    def update_from_dataset(self, new_data, strategy=None):
        if len(new_data) == 0:
            return
        fields = tensor_view(new_data)
        if fields is None:
            return super().update_from_dataset(new_data, strategy)
        y = fields[1]
        cl_idxs: Dict[int, list] = defaultdict(list)  # Avalanche's order: classes by first appearance
        for idx, target in enumerate(y.tolist()):
            cl_idxs[int(target)].append(idx)
        self.seen_classes.update(cl_idxs.keys())
        lens = self.get_group_lengths(len(self.seen_classes))
        class_to_len = dict(zip(self.seen_classes, lens))
        for class_id, idxs in cl_idxs.items():
            index = torch.tensor(idxs, dtype=torch.long)
            rows = [f.index_select(0, index) for f in fields]
            group = self.buffer_groups.get(class_id)
            if group is None:
                group = self.buffer_groups[class_id] = TensorReservoirBuffer(class_to_len[class_id])
                group.add(new_data, rows, index)
            elif isinstance(group, TensorReservoirBuffer):
                group.add(new_data, rows, index)
                group.resize(strategy, class_to_len[class_id])
            else:  # a group Avalanche's code filled
                group.update_from_dataset(new_data.subset(idxs))
                group.resize(strategy, class_to_len[class_id])
        for class_id, group in self.buffer_groups.items():
            group.resize(strategy, class_to_len[class_id])


def memory_fields(policy) -> Optional[List[torch.Tensor]]:
    """The buffer of ``policy`` as tensors (``[]`` when it is empty), or None when a part of it is not
    tensor-held (then only its ``buffer`` dataset has it)."""
    groups = list(policy.buffer_groups.values()) if hasattr(policy, "buffer_groups") else [policy]
    parts = []
    for g in groups:
        if not isinstance(g, TensorReservoirBuffer):
            return None
        if g.fields is not None:
            parts.append(g.fields)
        elif not g._empty():
            return None
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return []
    if not all(same_fields(p, parts[0]) for p in parts[1:]):
        return None
    return [torch.cat(fs) for fs in zip(*parts)] if len(parts) > 1 else parts[0]


class Replay(ReplayPlugin):
    """Avalanche's ``ReplayPlugin`` (experience replay: each minibatch is ``batch_size`` new samples
    followed by ``batch_size_mem`` samples of the buffer, the buffer cycled; the buffer updated by the
    storage policy after each experience). With a tensor-held buffer (the ``Tensor*Buffer`` policies
    of this module) and ``task_balanced_dataloader=False`` the loader is KTA's tensor loader, built
    directly: the batches Avalanche's ``ReplayDataLoader`` gives, converted as KTA's strategies convert
    it, without building it. Otherwise this is Avalanche's plugin.

    Args: as Avalanche's ``ReplayPlugin`` (``mem_size``, ``batch_size``, ``batch_size_mem``,
    ``task_balanced_dataloader``, ``storage_policy``; default policy: a
    :class:`TensorExperienceBalancedBuffer` of ``mem_size``).
    """

    def __init__(self, mem_size: int = 200, batch_size: Optional[int] = None, batch_size_mem: Optional[int] = None,
                 task_balanced_dataloader: bool = False, storage_policy=None):
        if storage_policy is None:
            storage_policy = TensorExperienceBalancedBuffer(max_size=mem_size, adaptive_size=True)
        super().__init__(mem_size=mem_size, batch_size=batch_size, batch_size_mem=batch_size_mem,
                         task_balanced_dataloader=task_balanced_dataloader, storage_policy=storage_policy)

    def before_training_exp(self, strategy, num_workers: int = 0, shuffle: bool = True, drop_last: bool = False,
                            **kwargs):
        memory = memory_fields(self.storage_policy)
        if memory == []:
            return  # the first experience: Avalanche's loader stays
        data = None
        if (memory is not None and not self.task_balanced_dataloader and not kwargs
                and getattr(strategy, "fast_data", False)
                and collates_by_default(getattr(strategy.adapted_dataset, "collate_fn", None))):
            data = tensor_view(strategy.adapted_dataset)
        if data is None or not same_fields(data, memory):
            return super().before_training_exp(strategy, num_workers=num_workers, shuffle=shuffle,
                                               drop_last=drop_last, **kwargs)
        if torch.device(strategy.device).type != "cpu":
            data, memory = [t.to(strategy.device) for t in data], [t.to(strategy.device) for t in memory]
        # Avalanche's ReplayDataLoader without task balancing: [data, memory], the data ends the epoch, the
        # memory restarts when it runs out, torch's global generator (no generator is passed to it)
        loader = TensorMultiLoader([data, memory], [self.batch_size or strategy.train_mb_size,
                                                    self.batch_size_mem or strategy.train_mb_size],
                                   termination_dataset=0, oversample_small_datasets=True, shuffle=shuffle,
                                   drop_last=drop_last)
        strategy.dataloader = loader


    def after_training_exp(self, strategy, **kwargs):
        # Avalanche's plugin calls the policy's deprecated ``update``, which only calls ``post_adapt``
        # (and puts a "once" filter in front of the warning filters on every call)
        self.storage_policy.post_adapt(strategy, strategy.experience)

