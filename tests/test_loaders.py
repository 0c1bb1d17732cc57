import torch
from torch.utils.data import DataLoader

from scenarios import class_incremental
from scenarios.loaders import TensorBatchLoader, tensor_view


def _collated(ds):
    return next(iter(DataLoader(ds, batch_size=len(ds), collate_fn=ds.collate_fn)))


def test_tensor_view_equals_avalanche_getitem_and_collate():
    bm = class_incremental("digits", n_experiences=5, seed=0)
    ds = bm.train_stream[0].dataset.concat(bm.train_stream[3].dataset)
    ds = ds.subset(list(range(0, len(ds), 3))[::-1]).train()
    view = tensor_view(ds)
    ref = _collated(ds)
    assert len(view) == len(ref) == 3
    for a, b in zip(view, ref):
        assert torch.equal(a, b)


def test_tensor_view_refuses_active_transforms():
    bm = class_incremental("digits", n_experiences=5, seed=0)
    ds = bm.train_stream[0].dataset.replace_current_transform_group(lambda x: x * 2)
    assert tensor_view(ds) is None


def test_loader_batches_cover_data_and_shuffle_is_seeded():
    x, y = torch.arange(10).float(), torch.arange(10)
    def epoch(seed):
        loader = TensorBatchLoader([x, y], 4, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return [b for b in loader]
    a, b = epoch(0), epoch(0)
    assert [len(bb[0]) for bb in a] == [4, 4, 2]
    assert all(torch.equal(u[0], v[0]) for u, v in zip(a, b))
    assert sorted(torch.cat([bb[1] for bb in a]).tolist()) == list(range(10))
    loader = TensorBatchLoader([x, y], 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    e1, e2 = torch.cat([bb[1] for bb in loader]), torch.cat([bb[1] for bb in loader])
    assert not torch.equal(e1, e2)  # a new permutation each epoch
    assert len(TensorBatchLoader([x], 4, drop_last=True)) == 2


# ---- Avalanche 0.6's loaders on tensors: same batches, field by field ----------------------------------
import itertools
import warnings

import pytest
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.benchmarks.utils.data_loader import (
    GroupBalancedDataLoader,
    GroupBalancedInfiniteDataLoader,
    ReplayDataLoader,
    SingleDatasetDataLoader,
    TaskBalancedDataLoader,
)

from scenarios.loaders import TensorMultiLoader, is_identity, tensor_loader


def _tensor_ds(n, task, offset=0):
    """An Avalanche classification dataset over a TensorDataset, as Avalanche's generators build them."""
    x = torch.arange(offset, offset + n, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    y = torch.arange(offset, offset + n) % 4
    return _make_taskaware_tensor_classification_dataset(x, y, task_labels=task)


def _multi_task(sizes=(23, 9, 14)):
    parts = [_tensor_ds(n, t, offset=100 * t) for t, n in enumerate(sizes)]
    ds = parts[0]
    for p in parts[1:]:
        ds = ds.concat(p)
    return ds.train()


def _epochs(loader, n=2, limit=None):
    out = []
    for _ in range(n):
        batches = list(itertools.islice(iter(loader), limit))
        out.append(batches)
    return out


def _same(av_loader, seed=0, epochs=2, limit=None):
    """Avalanche's loader and its tensor version give the same batches from the same RNG state."""
    fast = tensor_loader(av_loader)
    assert isinstance(fast, TensorMultiLoader)
    assert len(fast) == len(av_loader)
    gen = av_loader.loader_kwargs.get("generator") if hasattr(av_loader, "loader_kwargs") else av_loader.generator
    states = {}
    for name, loader in (("avalanche", av_loader), ("tensor", fast)):
        torch.manual_seed(seed)
        if gen is not None:
            gen.manual_seed(seed + 1)
        states[name] = _epochs(loader, epochs, limit)
        states[name + " rng"] = (torch.get_rng_state(), None if gen is None else gen.get_state())
    a, b = states["avalanche"], states["tensor"]
    assert [len(e) for e in a] == [len(e) for e in b]
    for ea, eb in zip(a, b):
        for ba, bb in zip(ea, eb):
            assert len(ba) == len(bb)
            for fa, fb in zip(ba, bb):
                assert fa.dtype == fb.dtype and torch.equal(fa, fb)
    # and both left the generators in the same state (the next epoch, the next plugin draw the same numbers)
    ra, rb = states["avalanche rng"], states["tensor rng"]
    assert torch.equal(ra[0], rb[0]) and (ra[1] is None or torch.equal(ra[1], rb[1]))
    return a


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("oversample", [False, True])
@pytest.mark.parametrize("generator", [False, True])
def test_task_balanced_loader_equals_avalanche(shuffle, drop_last, oversample, generator):
    g = torch.Generator() if generator else None
    loader = TaskBalancedDataLoader(_multi_task(), batch_size=8, oversample_small_groups=oversample,
                                    shuffle=shuffle, drop_last=drop_last, **({"generator": g} if g else {}))
    batches = _same(loader)
    # balanced: 3 tasks share a batch of 8 as 3 + 3 + 2 while they last
    t = batches[0][0][-1]
    assert [int((t == k).sum()) for k in range(3)] == [3, 3, 2]


@pytest.mark.parametrize("oversample", [False, True])
def test_group_balanced_and_single_loaders_equal_avalanche(oversample):
    groups = [_tensor_ds(n, 0, offset=100 * i).train() for i, n in enumerate((17, 5, 11))]
    _same(GroupBalancedDataLoader(groups, oversample_small_groups=oversample, batch_size=10, shuffle=True))
    empty = _tensor_ds(3, 0).train().subset([])  # skipped (torch cannot shuffle an empty dataset)
    _same(GroupBalancedDataLoader(groups[:2] + [empty], oversample_small_groups=oversample, batch_size=7))
    _same(SingleDatasetDataLoader(groups[0], batch_size=4, shuffle=True, generator=torch.Generator()))
    _same(GroupBalancedInfiniteDataLoader(groups[:2], batch_size=3, shuffle=True), limit=25, epochs=1)


@pytest.mark.parametrize("task_balanced", [False, True])
@pytest.mark.parametrize("batch_size_mem", [4, 7])
def test_replay_loader_equals_avalanche(task_balanced, batch_size_mem):
    data = _tensor_ds(30, 2, offset=500).train()
    memory = _multi_task((6, 5)).subset([10, 0, 3, 7, 1, 2, 9])  # a buffer: a subset of older experiences
    loader = ReplayDataLoader(data, memory, oversample_small_tasks=True, batch_size=8, batch_size_mem=batch_size_mem,
                              task_balanced_dataloader=task_balanced, shuffle=True, drop_last=False)
    batches = _same(loader)
    assert len(batches[0]) == 4  # the current data (30 samples, batches of 8) ends the epoch
    assert [int((b[-1] == 2).sum()) for b in batches[0]] == [8, 8, 8, 6]  # current data first, in full
    assert all(int((b[-1] != 2).sum()) > 0 for b in batches[0])  # the memory (oversampled) in every batch
    if not task_balanced:  # 7 memory samples in batches of 4: 4, 3, then a new permutation: 4, 3
        assert [int((b[-1] != 2).sum()) for b in batches[0]] == ([4, 3, 4, 3] if batch_size_mem == 4 else [7] * 4)


def test_plain_dataloader_equals_avalanche_and_refusals():
    from torch.utils.data import DataLoader

    ds = _tensor_ds(21, 0).train()
    _same(DataLoader(ds, batch_size=4, shuffle=True, collate_fn=ds.collate_fn, generator=torch.Generator()))
    _same(DataLoader(ds, batch_size=4, shuffle=False, collate_fn=ds.collate_fn))
    # a custom collate, a custom sampler, an active transform: not converted
    assert tensor_loader(DataLoader(ds, batch_size=4, collate_fn=lambda b: b)) is None
    assert tensor_loader(DataLoader(ds, batch_size=4, collate_fn=ds.collate_fn,
                                    sampler=torch.utils.data.RandomSampler(ds, replacement=True))) is None
    assert tensor_loader(SingleDatasetDataLoader(ds.replace_current_transform_group(lambda x: x + 1))) is None


def test_identity_transforms_count_as_none():
    from avalanche.benchmarks.utils.transforms import TupleTransform
    from torchvision.transforms import Compose

    assert is_identity(None) and is_identity(TupleTransform([None, None])) and is_identity(Compose([]))
    assert not is_identity(TupleTransform([None, abs]))
    ds = _tensor_ds(6, 0).replace_current_transform_group(TupleTransform([None, None]))
    assert tensor_view(ds) is not None


def test_avalanche_classic_benchmark_takes_fast_path():
    from avalanche.benchmarks import nc_benchmark

    train = _make_taskaware_tensor_classification_dataset(torch.randn(40, 3), torch.arange(40) % 4)
    test = _make_taskaware_tensor_classification_dataset(torch.randn(20, 3), torch.arange(20) % 4)
    bm = nc_benchmark(train, test, 2, task_labels=True, seed=0)
    ds = bm.train_stream[1].dataset
    assert tensor_view(ds) is not None
    view, ref = tensor_view(ds), _collated(ds)
    for a, b in zip(view, ref):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_tensor_batch_loader_draws_as_torch_dataloader():
    from torch.utils.data import DataLoader

    ds = _tensor_ds(22, 0).train()
    for drop_last in (False, True):
        g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        ref = DataLoader(ds, batch_size=5, shuffle=True, collate_fn=ds.collate_fn, generator=g1, drop_last=drop_last)
        fast = TensorBatchLoader(tensor_view(ds), 5, shuffle=True, generator=g2, drop_last=drop_last)
        for _ in range(2):
            for a, b in zip(ref, fast, strict=True):
                assert all(torch.equal(u, v) for u, v in zip(a, b))
        assert torch.equal(g1.get_state(), g2.get_state())
