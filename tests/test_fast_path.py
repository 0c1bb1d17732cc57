"""The fast path under Avalanche's loader-replacing plugins, task-balanced loaders and argument semantics."""
import warnings

import pytest
import torch
from avalanche.training.plugins import ReplayPlugin

from kta_plugins.nn import MLP
from scenarios import class_incremental, task_incremental
from scenarios.loaders import TensorMultiLoader
from strategies import Cumulative, Naive


@pytest.fixture(scope="module")
def split():
    return class_incremental("digits", n_experiences=5, seed=0)


def _strategy(cls=Naive, plugins=(), seed=0, **kw):
    torch.manual_seed(seed)
    model = MLP((1, 8, 8), 10, hidden=(32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model=model, optimizer=opt, plugins=list(plugins), seed=seed, progress=False, **kw)


def _train(s, exps, seen=None):
    orig = s.training_epoch

    def spy(**kw):
        if seen is not None:
            seen.append(s.dataloader)
        return orig(**kw)

    s.training_epoch = spy
    torch.manual_seed(1)  # the storage policy and Avalanche's replay loader draw from torch's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in exps:
            s.train(exp)


def test_avalanche_replay_plugin_stays_fast_and_trains_exactly_as_avalanche_loader(split):
    exps = list(split.train_stream)[:3]
    seen = []
    fast = _strategy(plugins=[ReplayPlugin(mem_size=40, batch_size_mem=16)], train_epochs=2)
    _train(fast, exps, seen)
    slow = _strategy(plugins=[ReplayPlugin(mem_size=40, batch_size_mem=16)], train_epochs=2, fast_data=False)
    _train(slow, exps)
    assert [type(d) for d in seen] == [TensorMultiLoader] * 6
    for a, b in zip(fast.model.parameters(), slow.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_task_balanced_batches_as_avalanche_on_multi_task_experiences():
    bm = task_incremental("digits", n_experiences=5, seed=0)
    s = _strategy(Cumulative, train_epochs=1)
    seen = []
    _train(s, list(bm.train_stream)[:3], seen)
    loader = seen[-1]
    assert isinstance(loader, TensorMultiLoader)
    batches = list(loader)
    n_tasks = len(loader.datasets)
    assert n_tasks == 3
    # Avalanche's TaskBalancedDataLoader(oversample_small_groups=True): the 64 samples of a batch split
    # 22 + 21 + 21 over the three tasks, the largest task ends the epoch, smaller ones are cycled again
    # (a partial batch where a task runs out first)
    assert loader.batch_sizes == [22, 21, 21] and loader.oversample_small_datasets
    counts = [sorted(int((b[-1] == t).sum()) for t in b[-1].unique()) for b in batches]
    assert all(c == [21, 21, 22] for c in counts[:-2])
    from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader

    exps = list(bm.train_stream)[:3]
    data = exps[0].dataset.concat(exps[1].dataset).concat(exps[2].dataset).train()
    reference = TaskBalancedDataLoader(data, batch_size=64, oversample_small_groups=True, shuffle=True)
    assert sum(len(b[0]) for b in batches) == sum(len(b[0]) for b in reference) == 801


def test_train_epochs_zero_and_eval_mb_size_none(split):
    replay = ReplayPlugin(mem_size=30)
    s = _strategy(plugins=[replay], train_epochs=0, eval_mb_size=None, train_mb_size=16)
    before = [p.detach().clone() for p in s.model.parameters()]
    _train(s, [split.train_stream[0]])
    assert s.eval_mb_size == 16
    assert len(replay.storage_policy.buffer) == 30  # callbacks ran: the buffer is filled
    assert all(torch.equal(a, b) for a, b in zip(before, s.model.parameters()))  # no update
    with pytest.raises(ValueError, match="train_epochs"):
        _strategy(train_epochs=-1)


def test_lean_evaluator_serves_loggers_attached_after_the_first_run(split):
    from avalanche.logging import BaseLogger

    class EpochCounter(BaseLogger):
        def __init__(self):
            super().__init__()
            self.epochs = 0

        def after_training_epoch(self, strategy, metric_values, **kwargs):
            self.epochs += 1

    s = _strategy(train_epochs=2)
    _train(s, [split.train_stream[0]])
    counter = EpochCounter()
    s.evaluator.loggers.append(counter)
    _train(s, [split.train_stream[1]])
    assert counter.epochs == 2


@pytest.mark.parametrize("spec", ["replay:mem_size=30,storage=class",
                                  "replay:mem_size=30,storage=reservoir,task_balanced=true",
                                  "replay:mem_size=30,batch_size_mem=8"])
def test_replay_storage_policies_stay_fast_and_match_avalanche_loader(spec):
    from kta_plugins.registry import PLUGINS

    bm = task_incremental("digits", n_experiences=5, seed=0)
    exps = list(bm.train_stream)[:3]
    seen = []
    fast = _strategy(plugins=[PLUGINS.build(spec)], train_epochs=1)
    _train(fast, exps, seen)
    slow = _strategy(plugins=[PLUGINS.build(spec)], train_epochs=1, fast_data=False)
    _train(slow, exps)
    assert [type(d) for d in seen] == [TensorMultiLoader] * 3
    assert len(seen[-1].datasets) >= 2  # current data + memory
    for a, b in zip(fast.model.parameters(), slow.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
