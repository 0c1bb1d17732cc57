"""Per-sample caching of a fixed teacher's outputs (logits, and the tapped feature of feature distillers).

A teacher that does not change during an experience (a module or checkpoint teacher, or
``teacher="previous"``, which is frozen from one experience to the next) gives the same outputs for the
same input every epoch. When the strategy batches tensors (KTA's fast path: no augmentation, no
transform), :class:`TeacherCache` runs the teacher once over every input of the experience's loader and
then answers each minibatch by looking its inputs up, instead of running the teacher again.

The lookup is exact: rows are found by an integer hash of their bytes and then compared with the stored
inputs (``torch.equal``); a minibatch with any row not in the cache (inputs changed by another plugin, an
augmentation) gets ``None`` and the teacher runs as usual. The cache holds the teacher's outputs for the
experience (``n x classes`` logits, plus ``n x feature`` when a feature is tapped) and refers to the
loader's input tensors (a copy only when the loader joins several datasets, e.g. with replay).

Used by :class:`kta_plugins.distill.base.DistillationPlugin` with ``cache_teacher=True``.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

__all__ = ["TeacherCache", "loader_inputs", "teacher_outputs"]

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _row_keys(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """An int64 hash per row of ``x`` from its exact bytes (equal rows, equal keys)."""
    rows = x.reshape(len(x), -1).contiguous()
    if rows.is_floating_point() or rows.is_complex():
        rows = rows.view(_INT_OF_SIZE[rows.element_size()])
    rows = rows.to(torch.int64)
    return (rows * weights[: rows.shape[1]]).sum(1)  # int64 arithmetic wraps: still a function of the bytes


def loader_inputs(loader) -> Optional[List[torch.Tensor]]:
    """The input tensors (field 0) of KTA's tensor loaders, or None for any other loader."""
    from scenarios.loaders import TensorBatchLoader, TensorMultiLoader

    if isinstance(loader, TensorMultiLoader):
        return [d[0] for d in loader.datasets]
    if isinstance(loader, TensorBatchLoader):
        return [loader.tensors[0]]
    return None


class TeacherCache:
    """The outputs of ``teacher_fn`` for every row of ``inputs``, found again by the rows themselves.

    Args:
        teacher_fn: ``x -> tuple of tensors`` (first dimension = rows), run without gradient.
        inputs: the tensors whose rows are cached (e.g. :func:`loader_inputs`).
        batch_size: rows per teacher call while building (default 256).

    Example:
        >>> cache = TeacherCache(lambda x: (teacher(x),), loader_inputs(strategy.dataloader))
        >>> hit = cache.lookup(strategy.mb_x)        # None when a row is not cached
        >>> t_logits = hit[0] if hit is not None else teacher(strategy.mb_x)
    """

    def __init__(self, teacher_fn: Callable[[torch.Tensor], Tuple[torch.Tensor, ...]],
                 inputs: Sequence[torch.Tensor], batch_size: int = 256):
        inputs = [x for x in inputs if len(x)]
        if not inputs:
            raise ValueError("inputs must hold at least one row")
        self.x = inputs[0] if len(inputs) == 1 else torch.cat(inputs)
        width = self.x[0].numel()
        gen = torch.Generator().manual_seed(0x5EED)
        self._weights = torch.randint(1, 2**31 - 1, (width,), generator=gen, dtype=torch.int64).to(self.x.device)
        keys = _row_keys(self.x, self._weights)
        self.keys, self.order = torch.sort(keys)
        with torch.no_grad():
            parts = [teacher_fn(self.x[i:i + batch_size]) for i in range(0, len(self.x), batch_size)]
        self.outputs = tuple(torch.cat([p[k].detach() for p in parts]) for k in range(len(parts[0])))
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.x)

    def lookup(self, x: torch.Tensor) -> Optional[Tuple[torch.Tensor, ...]]:
        """The cached outputs for the rows of ``x`` (in ``x``'s order), or None when any row is not cached."""
        if x.shape[1:] != self.x.shape[1:] or x.dtype != self.x.dtype or x.device != self.x.device:
            self.misses += 1
            return None
        keys = _row_keys(x, self._weights)
        pos = torch.searchsorted(self.keys, keys).clamp_(max=len(self.keys) - 1)
        idx = self.order[pos]
        if not (bool((self.keys[pos] == keys).all()) and torch.equal(self.x[idx], x)):
            self.misses += 1
            return None
        self.hits += 1
        return tuple(o[idx] for o in self.outputs)


def teacher_outputs(plugin, strategy, x: torch.Tensor) -> Optional[Tuple[torch.Tensor, ...]]:
    """A distillation plugin's cached teacher outputs for ``x``: ``(logits,)``, or ``(logits, feature)``
    for feature distillers; None when ``plugin.cache_teacher`` is off, the teacher is multi-head, the
    strategy's loader is not one of KTA's tensor loaders (a transform or augmentation is active), or a row
    of ``x`` is not cached. The cache is built on the first call of each experience (the plugin sets
    ``plugin._teacher_cache = None`` when an experience starts) and holds until the next one.
    """
    if not getattr(plugin, "cache_teacher", False) or plugin.teacher is None:
        return None
    cache = plugin.__dict__.get("_teacher_cache")
    if cache is False:  # not possible during this experience
        return None
    if cache is None:
        cache = _build(plugin, strategy)
        plugin._teacher_cache = cache if cache is not None else False
        if cache is None:
            return None
    return cache.lookup(x)


def _build(plugin, strategy) -> Optional[TeacherCache]:
    import warnings

    from avalanche.models import MultiTaskModule

    from ..nn import FeatureTap

    teacher = plugin.teacher
    if isinstance(teacher, MultiTaskModule):
        return None
    inputs = loader_inputs(strategy.dataloader)
    if inputs is None or not any(len(x) for x in inputs):
        warnings.warn(f"{type(plugin).__name__}: cache_teacher=True but the training data is not batched as "
                      "tensors (an active transform or augmentation?): the teacher runs on every minibatch",
                      stacklevel=2)
        return None
    layer = getattr(plugin, "teacher_layer", None) if getattr(plugin, "feature_layers", False) else None
    teacher.eval()
    if layer is None:
        return TeacherCache(lambda xb: (teacher(xb),), inputs, batch_size=strategy.eval_mb_size)
    tap = FeatureTap(teacher, [layer], detach=True)
    try:
        return TeacherCache(lambda xb: (teacher(xb), tap[layer]), inputs, batch_size=strategy.eval_mb_size)
    finally:
        tap.remove()
