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


# ---- the training loop's shortcuts (KTAStrategyMixin.training_epoch) ---------------------------------
class _AvalancheLoop(Naive):
    """KTA's Naive on Avalanche's own loop and dispatch: the reference for the shortcuts."""

    def training_epoch(self, **kwargs):
        from avalanche.training.templates.update_type.sgd_update import SGDUpdate

        return SGDUpdate.training_epoch(self, **kwargs)


def _plugin_sets():
    from avalanche.training.plugins import EWCPlugin, LwFPlugin

    from kta_plugins.distill import KD

    def teacher():
        torch.manual_seed(5)
        return MLP((1, 8, 8), 10, hidden=(16,))

    from kta_plugins.replay import Replay

    class CountIterations:  # a hook after the iteration only: the quiet loop still calls it
        def __init__(self):
            self.n = 0

        def after_training_iteration(self, strategy, **kw):
            self.n += 1
            strategy.optimizer.param_groups[0]["lr"] *= 0.99  # and it acts on the next step

    return {
        "none": lambda: [],
        "kta-replay": lambda: [Replay(mem_size=20)],
        "after-iteration-only": lambda: [CountIterations()],
        "avalanche-ewc": lambda: [EWCPlugin(ewc_lambda=10.0)],
        "avalanche-lwf": lambda: [LwFPlugin(alpha=1.0, temperature=2.0)],
        "kta-kd": lambda: [KD(teacher=teacher(), alpha=0.5)],
        "mixed": lambda: [EWCPlugin(ewc_lambda=10.0), KD(teacher=teacher(), alpha=0.5)],
    }


@pytest.mark.parametrize("name", list(_plugin_sets()))
def test_loop_shortcuts_train_exactly_as_avalanches_loop(split, name):
    exps = list(split.train_stream)[:2]
    make = _plugin_sets()[name]
    fast, ref = _strategy(plugins=make(), train_epochs=2), _strategy(_AvalancheLoop, plugins=make(), train_epochs=2)
    quiet = []
    fast._quiet_epoch = lambda orig=fast._quiet_epoch: quiet.append(1) or orig()
    _train(fast, exps)
    _train(ref, exps)
    for a, b in zip(fast.model.parameters(), ref.model.parameters()):
        assert torch.equal(a, b)
    # the quiet loop (no per-iteration hook but after_training_iteration) runs every epoch exactly there
    assert len(quiet) == (4 if name in ("none", "kta-replay", "after-iteration-only") else 0)
    counters = [p for p in fast.plugins + ref.plugins if type(p).__name__ == "CountIterations"]
    assert len({c.n for c in counters}) <= 1 and all(c.n > 0 for c in counters)
    assert not any(k in fast.__dict__ for k in ("forward", "criterion", "backward", "_before_forward"))


class _InPlacePenalty:
    """A user's plugin (not KTA's, not Avalanche's) that adds to the loss in place."""

    def before_backward(self, strategy, **kwargs):
        strategy.loss += 0.0 * sum(p.sum() for p in strategy.model.parameters())


def test_criterion_is_the_loss_only_when_nothing_can_tell(split):
    from avalanche.core import SupervisedPlugin
    from avalanche.training.plugins import EWCPlugin

    from kta_plugins.distill import KD

    class UserPlugin(_InPlacePenalty, SupervisedPlugin):
        pass

    t = MLP((1, 8, 8), 10, hidden=(16,))
    cases = {(): True, (EWCPlugin(1.0),): True, (KD(teacher=t),): True,
             (EWCPlugin(1.0), KD(teacher=t)): False,  # Avalanche's += would change the ledger's criterion
             (UserPlugin(),): False}
    for plugins, expected in cases.items():
        s = _strategy(plugins=plugins)
        assert s._criterion_alias_safe() is expected, plugins
    s = _strategy()
    s.track_loss_terms = True  # the ledger reads the criterion term apart from the loss
    assert s._criterion_alias_safe() is False

    seen = []

    class Spy(SupervisedPlugin):
        def after_training_iteration(self, strategy, **kwargs):
            seen.append((strategy.loss is strategy._kta_criterion[1], tuple(strategy.loss.shape)))

    s = _strategy(plugins=[Spy()])
    _train(s, list(split.train_stream)[:1])
    assert seen and all(seen_is and shape == () for seen_is, shape in seen)
    s = _strategy(plugins=[Spy(), UserPlugin()])
    seen.clear()
    _train(s, list(split.train_stream)[:1])
    assert seen and all(not seen_is and shape == (1,) for seen_is, shape in seen)  # Avalanche's zeros(1) + loss


def test_empty_loss_placeholder_behaves_as_avalanches_zeros(split):
    from strategies.base import _EmptyLoss

    s = _strategy()
    empty = _EmptyLoss(s)
    x = torch.tensor(2.0, requires_grad=True)
    assert torch.equal(empty + x, torch.zeros(1) + x) and torch.equal(x + empty, torch.zeros(1) + x)
    assert empty.item() == 0.0 and empty.shape == (1,)
    other = x * 3
    total = empty
    total += other  # not the criterion: a new tensor, as Avalanche's zeros(1) += other gives
    assert total is not other and torch.equal(total, torch.zeros(1) + other)


def test_loop_shortcuts_leave_nothing_behind_on_error(split):
    class Boom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.calls = torch.nn.Linear(64, 10), 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("boom")
            return self.lin(x.flatten(1))

    torch.manual_seed(0)
    model = Boom()
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)
    with pytest.raises(RuntimeError, match="boom"):
        _train(s, list(split.train_stream)[:1])
    assert isinstance(s.loss, torch.Tensor)
    assert not any(k in s.__dict__ for k in ("forward", "criterion", "backward", "optimizer_step", "_after_update"))


def test_plugins_added_between_epochs_and_subclass_dispatch_are_honoured(split):
    from avalanche.core import SupervisedPlugin

    calls = {"late": 0, "sub": 0}

    class Late(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            calls["late"] += 1

    class Adder(SupervisedPlugin):
        def after_training_epoch(self, strategy, **kwargs):
            if strategy.clock.train_exp_epochs == 0:  # (the clock counts this epoch after this hook)
                strategy.plugins.append(Late())

    class Sub(Naive):
        def _before_forward(self, **kwargs):
            calls["sub"] += 1
            super()._before_forward(**kwargs)

    s = _strategy(Sub, plugins=[Adder()], train_epochs=2)
    _train(s, list(split.train_stream)[:1])
    n_iter = s.clock.train_exp_iterations
    assert calls["sub"] == n_iter and 0 < calls["late"] == n_iter // 2


def test_periodic_evaluation_by_iteration_still_runs(split):
    s = _strategy(train_epochs=1, eval_every=2, peval_mode="iteration")
    evals = []
    orig = s.eval
    s.eval = lambda *a, **k: (evals.append(1), orig(*a, **k))[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.train(split.train_stream[0], eval_streams=[split.test_stream[0]])
    assert len(evals) >= s.clock.train_exp_iterations // 2


def test_strategy_state_taken_mid_epoch_holds_no_bound_dispatch(split):
    from avalanche.core import SupervisedPlugin

    states = []

    class Snap(SupervisedPlugin):
        def after_training_iteration(self, strategy, **kwargs):
            states.append(strategy.__getstate__())

    s = _strategy(plugins=[Snap()])
    _train(s, list(split.train_stream)[:1])
    assert states and not any(k in st for st in states
                              for k in ("forward", "criterion", "backward", "optimizer_step", "_before_forward",
                                        "_kta_plan"))


# ---- replay on tensors (kta_plugins.replay) ---------------------------------------------------------
@pytest.mark.parametrize("storage", ["experience", "class", "reservoir"])
@pytest.mark.parametrize("kind", ["class", "task"])
def test_tensor_replay_holds_and_batches_avalanches_samples(storage, kind):
    """KTA's Replay + tensor storage policy against Avalanche's ReplayPlugin + policy: the same buffer
    (sample for sample, in order), the same batches, the same weights; the buffer still reads as a dataset."""
    from avalanche.training.storage_policy import ClassBalancedBuffer, ExperienceBalancedBuffer, \
        ReservoirSamplingBuffer

    from kta_plugins.replay import Replay, TensorClassBalancedBuffer, TensorExperienceBalancedBuffer, \
        TensorReservoirBuffer, memory_fields
    from scenarios.loaders import tensor_view

    policies = {"experience": (TensorExperienceBalancedBuffer, ExperienceBalancedBuffer),
                "class": (TensorClassBalancedBuffer, ClassBalancedBuffer),
                "reservoir": (TensorReservoirBuffer, ReservoirSamplingBuffer)}[storage]
    bm = (class_incremental if kind == "class" else task_incremental)("digits", n_experiences=5, seed=0)
    exps = list(bm.train_stream)[:3]
    runs, seen = [], []
    for i, policy in enumerate(policies):
        plugin = (Replay if i == 0 else ReplayPlugin)(mem_size=50, batch_size_mem=16, storage_policy=policy(50))
        s = _strategy(plugins=[plugin], train_epochs=2)
        _train(s, exps, seen if i == 0 else None)
        runs.append((s, plugin.storage_policy))
    (fast, tensor_policy), (ref, av_policy) = runs
    assert all(type(d) is TensorMultiLoader for d in seen)
    held = memory_fields(tensor_policy)
    expected = tensor_view(av_policy.buffer)
    assert len(held[0]) == 50 and all(torch.equal(a, b) for a, b in zip(held, expected))
    as_dataset = tensor_view(tensor_policy.buffer)  # materialised from the experiences' datasets
    assert all(torch.equal(a, b) for a, b in zip(as_dataset, expected))
    for a, b in zip(fast.model.parameters(), ref.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_tensor_replay_falls_back_to_avalanche_on_data_it_cannot_hold(split):
    """An experience with an active transform: the buffer is held by Avalanche's code (a dataset)."""
    from kta_plugins.replay import Replay, memory_fields

    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

    d0 = split.train_stream[0].dataset.replace_current_transform_group(lambda x: x.flip(-1))
    d1 = split.train_stream[1].dataset
    exps = list(benchmark_from_datasets(train=[d0, d1], test=[d0, d1]).train_stream)
    plugin = Replay(mem_size=20)
    seen = []
    s = _strategy(plugins=[plugin], train_epochs=1)
    _train(s, exps, seen)
    assert memory_fields(plugin.storage_policy) is None and len(plugin.storage_policy.buffer) == 20
    assert len(seen) == 2  # trained on both, through Avalanche's storage code and ReplayDataLoader


def test_misspelled_strategy_arguments_still_fail_as_in_avalanche_and_the_check_is_cached(monkeypatch):
    """Avalanche's check of misspelled ``__init__`` keywords, its accepted names computed once per class."""
    import inspect

    from avalanche.training import Naive as AvalancheNaive

    model = MLP((1, 8, 8), 10, hidden=(8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for cls, kw in ((Naive, {"progress": False}), (AvalancheNaive, {})):
        with pytest.raises(TypeError, match="unexpected keyword argument: trian_epochs"):
            cls(model=model, optimizer=opt, trian_epochs=2, **kw)
    Naive(model=model, optimizer=opt, progress=False)
    calls = []
    real = inspect.signature
    monkeypatch.setattr(inspect, "signature", lambda *a, **k: calls.append(a) or real(*a, **k))
    Naive(model=model, optimizer=opt, progress=False)
    # what is left: Avalanche's positional-argument check, one signature per wrapped __init__ (3 levels);
    # uncached, the misspelling check read the signatures of every class of the hierarchy (37 here)
    assert len(calls) <= 3


# ---- Avalanche's default training loader, built when first read -------------------------------------
def test_default_train_loader_is_built_only_when_read_and_with_the_arguments_of_its_make_call(split, monkeypatch):
    """KTA's Replay installs its own loader from the second experience on: Avalanche's default one is then
    never built. When it is read, it is Avalanche's, with the dataset and batch size of the make call."""
    from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader

    from kta_plugins.replay import Replay
    from strategies.base import _DeferredLoader

    built = []
    orig = _DeferredLoader.build
    monkeypatch.setattr(_DeferredLoader, "build", lambda self: built.append(self) or orig(self))
    s = _strategy(plugins=[Replay(mem_size=20)], train_epochs=1, train_mb_size=16)
    _train(s, list(split.train_stream)[:3])
    assert len(built) == 1  # the first experience only: no memory yet, Avalanche's loader trains

    class Reader:  # reads the loader before training, then changes the batch size
        def __init__(self):
            self.batch_sizes = []

        def before_training_exp(self, strategy, **kw):
            strategy.train_mb_size = 4

        def before_training_epoch(self, strategy, **kw):
            self.batch_sizes.append(len(next(iter(strategy.dataloader))[0]))

    exp = split.train_stream[0]
    for fast_data in (True, False):  # Avalanche's eager loader has the make call's batch size too
        reader = Reader()
        _train(_strategy(plugins=[reader], train_epochs=1, train_mb_size=16, fast_data=fast_data), [exp])
        assert reader.batch_sizes == [16]
    s = _strategy(train_epochs=1, train_mb_size=16)
    s.experience, s.adapted_dataset = exp, exp.dataset.train()
    s.make_train_dataloader()
    deferred = s.__dict__["_kta_dataloader"]
    assert type(deferred) is _DeferredLoader and deferred.args["batch_size"] == 16
    s.train_mb_size, s.adapted_dataset = 4, None  # what the loader was made with is kept
    loader = deferred.build()
    assert type(loader) is TaskBalancedDataLoader and loader.batch_sizes == [16]
    assert sum(len(d) for d in loader.datasets) == len(deferred.dataset) == len(exp.dataset)
