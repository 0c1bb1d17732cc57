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
