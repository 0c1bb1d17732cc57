"""Freezing, linear probe, gradual unfreezing, layer-wise rates, LP-FT: what trains and at which rate."""
import io

import pytest
import torch
from avalanche.core import SupervisedPlugin

from kta_plugins.base import PLUGINS
from kta_plugins.nn import MLP, SmallCNN
from kta_plugins.transfer import LPFT, Freeze, GradualUnfreeze, LayerwiseLR, layer_groups
from scenarios import class_incremental
from strategies import Naive
from strategies.finetune import FineTune, LinearProbe, LPFTStrategy


@pytest.fixture(scope="module")
def split():
    return class_incremental("digits", n_experiences=2, seed=0)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return MLP((1, 8, 8), 10, hidden=(32, 16))


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before, model):
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


def _naive(model, plugins, lr=0.1, momentum=0.9, weight_decay=1e-3, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    return Naive(model=model, optimizer=opt, plugins=list(plugins), progress=False, seed=0, **kw)


def test_layer_groups_head_first():
    assert layer_groups(_mlp()) == ["classifier", "features.3", "features.1"]


def test_freeze_keeps_weights_bit_for_bit_across_experiences(split):
    # Momentum and weight decay in the optimizer, and Avalanche re-adding every parameter to it
    # between experiences: the frozen weights must still not move at all.
    model = _mlp()
    s = _naive(model, [Freeze(patterns=["features"])], train_epochs=2)
    before = _snapshot(model)
    for exp in split.train_stream:
        s.train(exp)
    assert _changed(before, model) == {"classifier.weight", "classifier.bias"}
    # every parameter is in the optimizer (Avalanche's update_optimizer), yet nothing frozen moved
    in_opt = {id(p) for g in s.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in model.parameters())


def test_freeze_holds_when_weights_had_momentum(split):
    # Train everything one experience (momentum buffers fill), then freeze: no leftover momentum step.
    model = _mlp()
    s = _naive(model, [], train_epochs=1)
    s.train(split.train_stream[0])
    s.plugins.append(Freeze(patterns=["*"], exclude=["classifier"]))
    before = _snapshot(model)
    s.train(split.train_stream[1])
    assert _changed(before, model) == {"classifier.weight", "classifier.bias"}


def test_freeze_keeps_frozen_batchnorm_statistics(split):
    torch.manual_seed(0)
    model = SmallCNN((1, 8, 8), 10, channels=4)
    s = _naive(model, [Freeze(patterns=["features"])])
    before = _snapshot(model)
    s.train(split.train_stream[0])
    assert _changed(before, model) == {"classifier.weight", "classifier.bias"}


def test_linear_probe_strategy(split):
    model = _mlp()
    s = LinearProbe(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                    head=["classifier"], train_epochs=5, progress=False)
    before = _snapshot(model)
    s.train(split.train_stream[0])
    acc = s.eval(split.test_stream[:1])["Top1_Acc_Stream/eval_phase/test_stream/Task000"]
    assert _changed(before, model) == {"classifier.weight", "classifier.bias"}
    assert acc > 0.5


def test_freeze_errors():
    with pytest.raises(TypeError, match="patterns"):
        Freeze(patterns=3)
    with pytest.raises(ValueError, match="patterns"):
        Freeze(patterns=[])
    s = _naive(_mlp(), [Freeze(patterns=["encoder"])])
    bm = class_incremental("digits", n_experiences=2, seed=0)
    with pytest.raises(ValueError, match="patterns.*encoder"):
        s.train(bm.train_stream[0])


def test_freeze_everything_is_a_clear_error_before_any_update():
    """The default patterns=["*"] without exclude leaves nothing to train: a ValueError naming
    patterns/exclude before the first backward, and no weight has moved."""
    model = _mlp()
    before = _snapshot(model)
    s = _naive(model, [Freeze()])
    bm = class_incremental("digits", n_experiences=2, seed=0)
    with pytest.raises(ValueError, match="patterns.*exclude"):
        s.train(bm.train_stream[0])
    assert _changed(before, model) == set()


class RateRecorder(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.seen = []

    def before_update(self, strategy, **kwargs):
        if not self.seen or self.seen[-1][0] != strategy.clock.train_exp_counter:
            names = {id(p): n for n, p in strategy.model.named_parameters()}
            self.seen.append((strategy.clock.train_exp_counter,
                              {names[id(p)]: g["lr"] for g in strategy.optimizer.param_groups for p in g["params"]}))


def test_layerwise_rates_hold_over_several_experiences():
    bm = class_incremental("digits", n_experiences=5, seed=0)
    model = _mlp()
    rec = RateRecorder()
    s = _naive(model, [LayerwiseLR(groups=["classifier", "features.3", "features.1"], decay=0.25), rec], lr=0.08)
    for exp in bm.train_stream:
        s.train(exp)
    assert len(rec.seen) == 5
    expected = {"classifier": 0.08, "features.3": 0.02, "features.1": 0.005}
    for _, rates in rec.seen:
        assert len(rates) == 6  # every parameter in exactly one group
        for name, lr in rates.items():
            assert lr == pytest.approx(expected[name.rpartition(".")[0]])
    assert len(s.optimizer.param_groups) == 3


def test_layerwise_explicit_factors_and_errors():
    with pytest.raises(ValueError, match="decay"):
        LayerwiseLR(decay=0.0)
    with pytest.raises(ValueError, match="factors\\[1\\]"):
        LayerwiseLR(groups=["a", "b"], factors=[1.0, -1.0])
    with pytest.raises(ValueError, match="factors"):
        LayerwiseLR(groups=["a", "b"], factors=[1.0])


class TrainableRecorder(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def before_training_iteration(self, strategy, **kwargs):
        t = sorted({n.rpartition(".")[0] for n, p in strategy.model.named_parameters() if p.requires_grad})
        if not self.epochs or self.epochs[-1] != t:
            self.epochs.append(t)


def test_gradual_unfreeze_schedule_by_epoch(split):
    model = _mlp()
    rec = TrainableRecorder()
    s = _naive(model, [GradualUnfreeze(every=1), rec], train_epochs=3)
    before = _snapshot(model)
    s.train(split.train_stream[0])
    assert rec.epochs == [["classifier"], ["classifier", "features.3"], ["classifier", "features.1", "features.3"]]
    assert _changed(before, model) == set(before)  # everything trained in the end


def test_gradual_unfreeze_by_experience_keeps_frozen_groups_unchanged():
    bm = class_incremental("digits", n_experiences=2, seed=0)
    model = _mlp()
    s = _naive(model, [GradualUnfreeze(groups=["classifier", "features.3", "features.1"], unit="experience")])
    before = _snapshot(model)
    s.train(bm.train_stream[0])
    assert _changed(before, model) == {"classifier.weight", "classifier.bias"}
    before = _snapshot(model)
    s.train(bm.train_stream[1])
    assert _changed(before, model) == {"classifier.weight", "classifier.bias", "features.3.weight", "features.3.bias"}


def test_gradual_unfreeze_errors():
    with pytest.raises(ValueError, match="every"):
        GradualUnfreeze(every=0)
    with pytest.raises(ValueError, match="unit"):
        GradualUnfreeze(unit="step")


class LrRecorder(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.log = []

    def before_training_epoch(self, strategy, **kwargs):
        pass

    def before_update(self, strategy, **kwargs):
        tr = sorted({n.rpartition(".")[0] for n, p in strategy.model.named_parameters() if p.requires_grad})
        entry = (strategy.optimizer.param_groups[0]["lr"], tr)
        if not self.log or self.log[-1] != entry:
            self.log.append(entry)


def test_lpft_probe_then_finetune_at_lower_rate(split):
    model = _mlp()
    rec = LrRecorder()
    s = _naive(model, [LPFT(head=["classifier"], probe_epochs=2, ft_lr_scale=0.1), rec], lr=0.1, train_epochs=3)
    s.train(split.train_stream[0])
    assert rec.log[0] == (0.1, ["classifier"])
    assert rec.log[1][0] == pytest.approx(0.01)
    assert rec.log[1][1] == ["classifier", "features.1", "features.3"]
    assert len(rec.log) == 2
    assert s.optimizer.param_groups[0]["lr"] == 0.1  # restored after the experience


def test_lpft_strategy_and_errors(split):
    with pytest.raises(ValueError, match="probe_epochs"):
        LPFT(probe_epochs=0)
    with pytest.raises(ValueError, match="ft_lr_scale"):
        LPFT(ft_lr_scale=0)
    model = _mlp()
    with pytest.raises(ValueError, match="train_epochs"):
        LPFTStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), probe_epochs=2,
                     train_epochs=2, progress=False)
    s = LPFTStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                     probe_epochs=3, ft_lr_scale=0.5, train_epochs=6, progress=False)
    s.train(split.train_stream[0])
    acc = s.eval(split.test_stream[:1])["Top1_Acc_Stream/eval_phase/test_stream/Task000"]
    assert acc > 0.5


def test_finetune_strategy_assembles_plugins(split):
    model = _mlp()
    s = FineTune(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), freeze=["features.1"],
                 lr_decay=0.5, l2sp=0.01, progress=False)
    names = [type(p).__name__ for p in s.plugins]
    assert {"Freeze", "LayerwiseLR", "L2SP"} <= set(names)
    before = _snapshot(model)
    s.train(split.train_stream[0])
    assert "features.1.weight" not in _changed(before, model)
    assert "features.3.weight" in _changed(before, model)
    with pytest.raises(ValueError, match="lr_decay"):
        FineTune(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), lr_decay=2.0)
    with pytest.raises(ValueError, match="head"):
        LinearProbe(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), head=["fc"])


def test_registered_names_and_state_roundtrip():
    from strategies.registry import STRATEGIES

    for name in ("freeze", "gradual-unfreeze", "layerwise-lr", "l2sp", "kl-anchor", "adabn", "lora", "adapter", "fish"):
        assert name in PLUGINS
    for name in ("linear-probe", "finetune", "lpft"):
        assert name in STRATEGIES
    p = PLUGINS.build("freeze:patterns=['features'],exclude=['classifier']")
    assert p.patterns == ["features"] and p.exclude == ["classifier"]
    gu = PLUGINS.build("gradual-unfreeze:every=2,unit=experience")
    gu.experiences_seen, gu.stage = 3, 1
    buf = io.BytesIO()
    torch.save(gu.state_dict(), buf)
    buf.seek(0)
    fresh = GradualUnfreeze(every=2, unit="experience")
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert (fresh.experiences_seen, fresh.stage) == (3, 1)


@pytest.mark.parametrize("strategy,plugin", [("linear-probe", None), ("naive", "lora:patterns=['features.*'],rank=2"),
                                             ("naive", "layerwise-lr:decay=0.5")])
def test_reachable_from_kta_run(strategy, plugin):
    from strategies.cli import run

    out = run("split-digits", strategy, [plugin] if plugin else [], epochs=1, seed=0, progress=False)
    assert len(out["accuracy_matrix"]) == 5 and 0.0 <= out["average_accuracy"] <= 1.0
