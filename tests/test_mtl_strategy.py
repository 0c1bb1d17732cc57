"""The MultiTask strategy (per-task losses and metrics), each MTL plugin end to end, and M9:
weighting / surgery of the loss terms a continual strategy sums."""
import warnings

import pytest
import torch
from torch import nn

from kta_plugins.mtl import CAGrad, DWA, GradNorm, MGDA, PCGrad, SoftSharingPenalty, StaticWeights, Uncertainty
from kta_plugins.nn.multitask import CrossStitch, HardSharing, MMoE, SoftSharing
from scenarios.multitask import multitask_stream, stars
from strategies.multitask import MultiTask, MultiTaskLoss

warnings.filterwarnings("ignore")


@pytest.fixture(scope="module")
def bm():
    return multitask_stream(stars(n_train=192, n_test=64, seed=1), n_experiences=1)


def _strategy(net, plugins=(), epochs=1, **kw):
    return MultiTask(model=net, optimizer=torch.optim.Adam(net.parameters(), 1e-3), train_epochs=epochs,
                     train_mb_size=32, plugins=list(plugins), progress=False, seed=0, **kw)


class _Spy:
    def __init__(self):
        self.seen = []

    def __getattr__(self, name):
        if name.startswith(("before_", "after_")):
            return lambda strategy, **kw: None
        raise AttributeError(name)

    def before_backward(self, strategy, **kwargs):
        self.seen.append({k: float(v) for k, v in strategy.task_losses.items()} | {"loss": float(strategy.loss)})


def test_per_task_losses_are_exposed_and_summed(bm):
    torch.manual_seed(0)
    spy = _Spy()
    s = _strategy(HardSharing(bm.tasks, input_shape=bm.input_shape), [spy])
    s.train(bm.train_stream[0])
    assert len(spy.seen) == 6 and set(spy.seen[0]) == {"points", "size", "loss"}
    assert all(d["loss"] == pytest.approx(d["points"] + d["size"], rel=1e-6) for d in spy.seen)


def test_per_task_metrics_are_accuracy_mae_and_r2(bm):
    torch.manual_seed(0)
    net = HardSharing(bm.tasks, input_shape=bm.input_shape)
    s = _strategy(net)
    s.train(bm.train_stream[0])
    res = s.eval(bm.test_stream)
    test = bm.test_stream[0].dataset
    from scenarios.loaders import tensor_view

    x, y_points, y_size, _ = tensor_view(test)
    with torch.no_grad():
        out = net(x)
    acc = float((out["points"].argmax(1) == y_points).float().mean())
    mae = float((out["size"] - y_size).abs().mean())
    r2 = 1 - float(((out["size"] - y_size) ** 2).sum() / ((y_size - y_size.mean()) ** 2).sum())
    assert res["MTL/Acc/test_stream/points"] == pytest.approx(acc)
    assert res["MTL/MAE/test_stream/size"] == pytest.approx(mae, rel=1e-5)
    assert res["MTL/R2/test_stream/size"] == pytest.approx(r2, rel=1e-4, abs=1e-5)
    assert res["Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000"] == pytest.approx(acc)
    assert s.last_task_metrics["test_stream"]["size"]["R2"] == pytest.approx(r2, rel=1e-4, abs=1e-5)


def test_bad_input_is_a_clear_error(bm):
    loss = MultiTaskLoss({"points": 5})
    with pytest.raises(ValueError, match=r"head\(s\) \['size'\] have no target"):
        loss({"points": torch.zeros(2, 5), "size": torch.zeros(2)}, {"points": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(ValueError, match="no head"):
        MultiTaskLoss(bm.tasks)({"points": torch.zeros(2, 5)}, {"points": torch.zeros(2), "size": torch.zeros(2)})
    # a model with three heads for a two-task stream
    three = HardSharing({"points": 5, "size": "regression", "depth": "regression"}, input_shape=bm.input_shape)
    with pytest.raises(ValueError, match="3 heads for 2 tasks"):
        _strategy(three).train(bm.train_stream[0])
    with pytest.raises(ValueError, match="do not match"):
        _strategy(HardSharing(bm.tasks, input_shape=bm.input_shape), tasks={"points": 5})
    # tasks given that the minibatch does not carry
    s = _strategy(HardSharing({"points": 5, "size": "regression"}, input_shape=(1, 8, 8)),
                  tasks={"points": 5, "size": "regression"})
    from scenarios.streams import class_incremental

    with pytest.raises(ValueError, match="carries 1 target"):
        s.train(class_incremental("digits", n_experiences=1, seed=0).train_stream[0])


@pytest.mark.parametrize("make_net, plugins", [
    (lambda t, i: HardSharing(t, input_shape=i), lambda: [StaticWeights({"size": 2.0})]),
    (lambda t, i: HardSharing(t, input_shape=i), lambda: [Uncertainty()]),
    (lambda t, i: HardSharing(t, input_shape=i), lambda: [DWA()]),
    (lambda t, i: HardSharing(t, input_shape=i), lambda: [GradNorm()]),
    (lambda t, i: HardSharing(t, input_shape=i), lambda: [PCGrad()]),
    (lambda t, i: HardSharing(t, input_shape=i), lambda: [PCGrad(wrt="representation")]),
    (lambda t, i: HardSharing(t, input_shape=i), lambda: [MGDA(wrt="representation")]),
    (lambda t, i: HardSharing(t, input_shape=i), lambda: [CAGrad()]),
    (lambda t, i: SoftSharing(t, input_shape=i), lambda: [SoftSharingPenalty(weight=1e-2)]),
    (lambda t, i: CrossStitch(t, input_shape=i), lambda: []),
    (lambda t, i: MMoE(t, input_shape=i), lambda: [MGDA(shared="experts")]),
])
def test_each_model_and_plugin_trains_end_to_end(bm, make_net, plugins):
    torch.manual_seed(0)
    net = make_net(bm.tasks, bm.input_shape)
    before = [p.detach().clone() for p in net.parameters()]
    s = _strategy(net, plugins(), epochs=2)
    s.train(bm.train_stream[0])
    res = s.eval(bm.test_stream)
    assert 0 <= res["MTL/Acc/test_stream/points"] <= 1 and res["MTL/MAE/test_stream/size"] < 5
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))


def test_gradnorm_weights_move_and_mgda_weights_are_a_convex_combination(bm):
    torch.manual_seed(0)
    gn, mg = GradNorm(), MGDA()
    _strategy(HardSharing(bm.tasks, input_shape=bm.input_shape), [gn]).train(bm.train_stream[0])
    assert gn.weights != {"points": 1.0, "size": 1.0} and sum(gn.weights.values()) == pytest.approx(2.0)
    _strategy(HardSharing(bm.tasks, input_shape=bm.input_shape), [mg]).train(bm.train_stream[0])
    assert sum(mg.last_weights.values()) == pytest.approx(1.0) and min(mg.last_weights.values()) >= 0


def test_hook_time_errors_come_before_training(bm):
    net = HardSharing(bm.tasks, input_shape=bm.input_shape)
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match="shared='trunk'"):
        _strategy(net, [PCGrad(shared="trunk")]).train(bm.train_stream[0])
    with pytest.raises(ValueError, match="towers"):
        _strategy(net, [SoftSharingPenalty()]).train(bm.train_stream[0])
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters()))


def test_plain_backbone_becomes_hard_sharing_as_kta_run_builds_it():
    from strategies.cli import run

    out = run("stars", "multitask", ["uncertainty"], epochs=1, batch_size=64, lr=0.05, progress=False)
    assert 0 < out["average_accuracy"] <= 1


# ------------------------------------------------------------------ M9
def test_m9_pcgrad_arbitrates_between_new_data_and_replay():
    """Under Naive + replay, the terms are 'new' (current classes) and 'replay' (buffer samples)."""
    from avalanche.training.plugins import ReplayPlugin

    from kta_plugins.nn import MLP
    from scenarios.streams import class_incremental
    from strategies import Naive

    class Record(PCGrad):
        def before_backward(self, strategy, **kwargs):
            from kta_plugins.mtl.terms import loss_terms

            names, losses, _, rest = loss_terms(strategy)
            self.names = getattr(self, "names", []) + [tuple(names)]
            assert float(sum(losses) + rest) == pytest.approx(float(strategy.loss), rel=1e-5)
            super().before_backward(strategy, **kwargs)

    torch.manual_seed(0)
    bm = class_incremental("digits", n_experiences=2, seed=0)
    net = MLP((1, 8, 8), 10, hidden=(32,))
    rec = Record()
    s = Naive(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.05), train_epochs=1,
              plugins=[ReplayPlugin(mem_size=50), rec], progress=False)
    for exp in bm.train_stream:
        s.train(exp)
    assert ("new",) in rec.names and ("new", "replay") in rec.names


def test_m9_weights_apply_to_the_regularizer_term():
    """A penalty added by another plugin is the 'regularizers' term: weight 0 removes it."""
    from kta_plugins.nn import MLP
    from scenarios.streams import class_incremental
    from strategies import Naive

    class Penalty:
        def __getattr__(self, name):
            if name.startswith(("before_", "after_")):
                return lambda strategy, **kw: None
            raise AttributeError(name)

        def before_backward(self, strategy, **kwargs):
            strategy.loss = strategy.loss + 10.0 * sum((p ** 2).sum() for p in strategy.model.parameters())

    class Check:
        losses = []

        def __getattr__(self, name):
            if name.startswith(("before_", "after_")):
                return lambda strategy, **kw: None
            raise AttributeError(name)

        def after_backward(self, strategy, **kwargs):  # the loss backward used (weighting is applied last)
            crit = float(strategy._criterion(strategy.mb_output, strategy.mb_y))
            self.losses.append((float(strategy.loss), crit))

    torch.manual_seed(0)
    bm = class_incremental("digits", n_experiences=5, seed=0)
    net = MLP((1, 8, 8), 10, hidden=(16,))
    check = Check()
    s = Naive(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), train_epochs=1,
              plugins=[Penalty(), StaticWeights({"regularizers": 0.0}), check], progress=False)
    s.train(bm.train_stream[0])
    assert check.losses and all(l == pytest.approx(c, rel=1e-5) for l, c in check.losses)
