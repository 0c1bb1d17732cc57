"""Distillation plugins in Avalanche training: the loss they add, the teacher's life cycle, errors."""
import io

import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from torch import nn

from kta_plugins.base import PLUGINS
from kta_plugins.distill import (
    DKD, KD, PKT, RKD, AttentionTransfer, AttentionTransferLoss, DKDLoss, FitNets, KDLoss, PKTLoss, RKDLoss,
)
from kta_plugins.nn import MLP
from scenarios import class_incremental, task_incremental
from strategies import Naive
from strategies.results import train_and_evaluate


@pytest.fixture(scope="module")
def split():
    return class_incremental("digits", n_experiences=2, seed=0)


def _mlp(seed=0, n_classes=10, hidden=(32,)):
    torch.manual_seed(seed)
    return MLP((1, 8, 8), n_classes, hidden=hidden)


def _strategy(model, plugins, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return Naive(model=model, optimizer=opt, plugins=list(plugins), progress=False, seed=0, **kw)


class Recorder(SupervisedPlugin):
    """Records, at before_backward (after the distillation plugin), the loss and the minibatch."""

    def __init__(self, fitnets=None):
        super().__init__()
        self.calls = []
        self.fitnets = fitnets

    def before_backward(self, strategy, **kwargs):
        if len(self.calls) < 3:
            self.calls.append(dict(loss=strategy.loss.detach().clone(), x=strategy.mb_x.clone(),
                                   y=strategy.mb_y.clone(), t=strategy.mb_task_id.clone(),
                                   out=strategy.mb_output.detach().clone(),
                                   state={k: v.clone() for k, v in strategy.model.state_dict().items()},
                                   regressor=None if self.fitnets is None else
                                   {k: v.clone() for k, v in self.fitnets.regressor.state_dict().items()}))


def _student_at(call, hidden=(32,)):
    m = MLP((1, 8, 8), 10, hidden=hidden)
    m.load_state_dict(call["state"])
    return m


def _params(m):
    return [p.detach().clone() for p in m.parameters()]


# ------------------------------------------------------------------ the term each plugin adds
@pytest.mark.parametrize("method", ["kd", "dkd", "fitnets", "attention", "rkd", "pkt"])
def test_plugin_adds_its_loss_to_the_criterion(split, method):
    teacher = _mlp(seed=1, hidden=(48,))
    plugin = {
        "kd": lambda: KD(teacher, temperature=2.0, alpha=0.6),
        "dkd": lambda: DKD(teacher, alpha=1.0, beta=2.0, temperature=3.0),
        "fitnets": lambda: FitNets(teacher, weight=0.5),
        "attention": lambda: AttentionTransfer(teacher, weight=10.0, resize=True),
        "rkd": lambda: RKD(teacher, weight=0.5),
        "pkt": lambda: PKT(teacher, weight=100.0),
    }[method]()
    rec = Recorder(plugin if method == "fitnets" else None)
    s = _strategy(_mlp(), [plugin, rec])
    s.train(split.train_stream[0])
    call = rec.calls[1]
    student = _student_at(call)
    x, y = call["x"], call["y"]
    with torch.no_grad():
        out = student(x)
        ce = F.cross_entropy(out, y)
        t_out = teacher(x)
        hs, ht = student.features(x), teacher.features(x)
        if method == "kd":
            expected = KDLoss(2.0, 0.6)(out, t_out, y)
        elif method == "dkd":
            expected = ce + DKDLoss(1.0, 2.0, 3.0)(out, t_out, y)
        elif method == "fitnets":
            reg = nn.Linear(32, 48)
            reg.load_state_dict(call["regressor"])  # the regressor as it was at this step
            expected = ce + 0.5 * F.mse_loss(reg(hs), ht)
        elif method == "attention":
            expected = ce + 5.0 * AttentionTransferLoss(resize=True)(hs, ht)
        elif method == "rkd":
            expected = ce + 0.5 * RKDLoss()(hs, ht)
        else:
            expected = ce + 100.0 * PKTLoss()(hs, ht)
    assert call["loss"].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def test_gradients_reach_the_student_only_and_teacher_is_unchanged(split):
    teacher = _mlp(seed=1)
    before = _params(teacher)
    plugins = [KD(teacher), FitNets(teacher, weight=0.1), RKD(teacher, weight=0.1)]
    student = _mlp()
    s_before = _params(student)
    s = _strategy(student, plugins)
    for exp in split.train_stream:
        s.train(exp)
    for p in plugins:
        assert all(not q.requires_grad and q.grad is None for q in p.teacher.parameters())
        assert not p.teacher.training
        assert all(torch.equal(a, b) for a, b in zip(before, _params(p.teacher)))
        assert p.teacher is not student and all(p.teacher is not m for m in student.modules())
        opt_ids = {id(q) for g in s.optimizer.param_groups for q in g["params"]}
        assert not opt_ids & {id(q) for q in p.teacher.parameters()}
    assert all(torch.equal(a, b) for a, b in zip(before, _params(teacher)))  # the user's module too
    assert any(not torch.equal(a, b) for a, b in zip(s_before, _params(student)))


def test_distillation_gradient_flows_into_student_features():
    # One manual step of each feature loss: student grads non-zero, teacher grads absent.
    torch.manual_seed(0)
    s_net, t_net = _mlp(), _mlp(seed=1, hidden=(48,))
    x = torch.randn(8, 1, 8, 8)
    for loss in (RKDLoss(), PKTLoss(), AttentionTransferLoss(resize=True)):
        s_net.zero_grad()
        with torch.no_grad():
            ht = t_net.features(x)
        loss(s_net.features(x), ht).backward()
        assert s_net.features[1].weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in t_net.parameters())


# ------------------------------------------------------------------ teacher = "previous"
def test_previous_teacher_is_the_student_at_the_end_of_the_experience(split):
    rec = Recorder()
    kd = KD("previous", temperature=2.0, alpha=0.5)
    s = _strategy(_mlp(), [kd, rec])
    s.train(split.train_stream[0])
    first = rec.calls[0]
    with torch.no_grad():
        assert first["loss"].item() == pytest.approx(F.cross_entropy(_student_at(first)(first["x"]), first["y"]).item(),
                                                     rel=1e-5)  # nothing distilled in experience 0
    assert all(torch.equal(a, b) for a, b in zip(_params(kd.teacher), _params(s.model)))
    assert kd.teacher_classes == {0: sorted(split.train_stream[0].classes_in_this_experience)}
    old = kd.teacher_classes[0]
    s.train(split.train_stream[1])
    assert all(torch.equal(a, b) for a, b in zip(_params(kd.teacher), _params(s.model)))  # a new snapshot
    assert kd.teacher_classes[0] == sorted(set(old) | set(split.train_stream[1].classes_in_this_experience))


def test_previous_kd_loss_on_old_classes_only(split):
    kd = KD("previous", temperature=2.0, alpha=0.5)
    s = _strategy(_mlp(), [kd])
    s.train(split.train_stream[0])
    teacher_after_0 = MLP((1, 8, 8), 10, hidden=(32,))
    teacher_after_0.load_state_dict(kd.teacher.state_dict())
    old = sorted(split.train_stream[0].classes_in_this_experience)
    rec = Recorder()
    s.plugins.append(rec)
    s.train(split.train_stream[1])
    call = rec.calls[1]
    with torch.no_grad():
        out, t_out = _student_at(call)(call["x"]), teacher_after_0(call["x"])
        expected = 0.5 * F.cross_entropy(out, call["y"]) + 0.5 * KDLoss(2.0, 1.0)(out[:, old], t_out[:, old])
    assert call["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_teacher_with_fewer_classes_distils_on_its_classes(split):
    teacher = _mlp(seed=1, n_classes=6)
    rec = Recorder()
    s = _strategy(_mlp(), [KD(teacher, temperature=3.0, alpha=1.0), rec])
    s.train(split.train_stream[0])
    call = rec.calls[0]
    with torch.no_grad():
        out = _student_at(call)(call["x"])
        expected = KDLoss(3.0, 1.0)(out[:, :6], teacher(call["x"]))
    assert call["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="teacher outputs 10 classes but the student only 6"):
        KD._restrict(torch.zeros(2, 6), torch.zeros(2, 10), None)


class MultiHeadMLP(MultiTaskModule):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.classifier = MultiHeadClassifier(32, initial_out_features=2, masking=False)

    def forward_single_task(self, x, task_label):
        return self.classifier(self.features(x), task_label)


@pytest.mark.parametrize("plugin", [lambda: KD("previous"), lambda: DKD("previous"), lambda: RKD("previous")])
def test_task_incremental_multi_head(plugin):
    bm = task_incremental("digits", n_experiences=2, seed=0)
    torch.manual_seed(0)
    model = MultiHeadMLP()
    p = plugin()
    s = _strategy(model, [p])
    A = train_and_evaluate(s, bm)
    assert A.shape == (2, 2) and A[-1, 0] > 0.2  # task 0 still answered by its head, above chance (1/5)
    assert sorted(p.teacher_classes) == [0, 1]
    assert set(p.teacher.known_train_tasks_labels) == {0, 1}


def test_multi_head_kd_term_matches_per_head_hand_computation():
    bm = task_incremental("digits", n_experiences=2, seed=0)
    torch.manual_seed(0)
    kd = KD("previous", temperature=2.0, alpha=0.5)
    s = _strategy(MultiHeadMLP(), [kd])
    s.train(bm.train_stream[0])
    import copy
    teacher0 = copy.deepcopy(kd.teacher)
    cls0 = kd.teacher_classes[0]
    rec = Recorder()
    s.plugins.append(rec)
    s.train(bm.train_stream[1])
    call = rec.calls[0]  # first step: the student still equals the teacher except for head 1
    student = MultiHeadMLP()
    student.classifier.adaptation(bm.train_stream[0])
    student.classifier.adaptation(bm.train_stream[1])
    student.load_state_dict(call["state"])
    with torch.no_grad():
        out = call["out"]
        s0, t0 = student.forward_single_task(call["x"], 0), teacher0.forward_single_task(call["x"], 0)
        c = [k for k in cls0 if k < t0.shape[1]]
        expected = 0.5 * F.cross_entropy(out, call["y"]) + 0.5 * KDLoss(2.0, 1.0)(s0[:, c], t0[:, c])
    assert call["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------ FitNets regressor
def test_fitnets_regressor_is_trained_and_kept_out_of_the_student(split):
    teacher = _mlp(seed=1, hidden=(48,))
    fit = FitNets(teacher, weight=1.0)
    student = _mlp()
    s = _strategy(student, [fit])
    s.train(split.train_stream[0])
    reg = fit.regressor
    assert isinstance(reg, nn.Linear) and reg.weight.shape == (48, 32)
    opt_ids = {id(q) for g in s.optimizer.param_groups for q in g["params"]}
    assert {id(q) for q in reg.parameters()} <= opt_ids
    assert not any(k.startswith("regressor") or v.shape == (48, 32) for k, v in student.state_dict().items())
    w = reg.weight.detach().clone()
    s.train(split.train_stream[1])
    assert fit.regressor is reg and not torch.equal(w, reg.weight)  # trained, in both experiences
    n_groups = len(s.optimizer.param_groups)
    assert n_groups == 2  # added once
    # state round trip through torch.save / torch.load(weights_only=True)
    buf = io.BytesIO()
    torch.save(fit.state_dict(), buf)
    buf.seek(0)
    fresh = FitNets(teacher, weight=1.0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.regressor.weight, reg.weight)


@pytest.mark.parametrize("plugin, pattern", [
    (lambda t: FitNets(t, regressor=False), "'features'.*'features'"),
    (lambda t: AttentionTransfer(t, student_layer="features", teacher_layer="features"), "'features'.*'features'"),
])
def test_mismatched_feature_shapes_name_both_layers_before_any_update(split, plugin, pattern):
    teacher = _mlp(seed=1, hidden=(48,))
    student = _mlp()
    before = _params(student)
    with pytest.raises(ValueError, match=pattern):
        _strategy(student, [plugin(teacher)]).train(split.train_stream[0])
    assert all(torch.equal(a, b) for a, b in zip(before, _params(student)))


def test_missing_layer_is_an_error_naming_the_argument(split):
    with pytest.raises(ValueError, match="teacher_layer"):
        RKD(_mlp(), teacher_layer="encoder")
    student = _mlp()
    before = _params(student)
    with pytest.raises(ValueError, match="student_layer"):
        _strategy(student, [PKT(_mlp(), student_layer="encoder", teacher_layer="features")]).train(split.train_stream[0])
    assert all(torch.equal(a, b) for a, b in zip(before, _params(student)))


# ------------------------------------------------------------------ checkpoints, state, command line
def test_checkpoint_teacher(tmp_path, split):
    teacher = _mlp(seed=3)
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": teacher.state_dict()}, path)
    kd = KD(str(path))
    s = _strategy(_mlp(), [kd])
    s.train(split.train_stream[0])
    assert all(torch.equal(a, b) for a, b in zip(_params(teacher), _params(kd.teacher)))
    assert kd.teacher is not s.model and not kd.teacher.training
    bad = tmp_path / "bad.pt"
    torch.save(_mlp(hidden=(7,)).state_dict(), bad)
    with pytest.raises(ValueError, match="teacher=.*bad.pt"):
        _strategy(_mlp(), [KD(str(bad))]).train(split.train_stream[0])
    with pytest.raises(ValueError, match="teacher"):
        KD(str(tmp_path / "missing.pt"))


def test_previous_teacher_state_round_trips(split):
    kd = KD("previous")
    s = _strategy(_mlp(), [kd])
    s.train(split.train_stream[0])
    buf = io.BytesIO()
    torch.save(kd.state_dict(), buf)
    buf.seek(0)
    fresh = KD("previous")
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.teacher_classes == kd.teacher_classes
    s2 = _strategy(_mlp(seed=5), [fresh])
    fresh.before_training(s2)  # rebuilt from the student's architecture
    assert all(torch.equal(a, b) for a, b in zip(_params(kd.teacher), _params(fresh.teacher)))
    assert all(not q.requires_grad for q in fresh.teacher.parameters())


@pytest.mark.parametrize("spec", ["kd:teacher=previous,temperature=2", "fitnets:teacher=previous,weight=0.5",
                                  "attention:teacher=previous", "rkd:teacher=previous", "dkd:teacher=previous,beta=2",
                                  "pkt:teacher=previous"])
def test_command_line_names(spec):
    plugin = PLUGINS.build(spec)
    assert plugin.teacher_source == "previous"


def test_distill_strategy_end_to_end():
    from strategies.cli import run

    result = run("split-digits", "distill:method=dkd,method_args={'beta':2.0}", epochs=1, seed=0, progress=False)
    assert len(result["accuracy_matrix"]) == 5 and 0 < result["average_accuracy"] <= 1


@pytest.mark.parametrize("factory, argument", [
    (lambda: KD(teacher=3), "teacher"),
    (lambda: KD(temperature=-1.0), "temperature"),
    (lambda: KD(alpha=2.0), "alpha"),
    (lambda: DKD(beta=-2.0), "beta"),
    (lambda: DKD(warmup_epochs=-1), "warmup_epochs"),
    (lambda: FitNets(weight=-1.0), "weight"),
    (lambda: FitNets(regressor="yes"), "regressor"),
    (lambda: FitNets(regressor_lr=0.0), "regressor_lr"),
    (lambda: AttentionTransfer(p=-1.0), "p"),
    (lambda: RKD(angle_weight=-1.0), "angle_weight"),
    (lambda: PKT(weight=float("nan")), "weight"),
    (lambda: PKT(student_layer=""), "student_layer"),
])
def test_bad_plugin_arguments_name_the_argument(factory, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        factory()


def test_distill_strategy_bad_method():
    from strategies.distill import Distill

    m = _mlp()
    with pytest.raises(ValueError, match="method"):
        Distill(model=m, optimizer=torch.optim.SGD(m.parameters(), lr=0.1), method="hint")
    with pytest.raises(TypeError, match="method_args"):
        Distill(model=m, optimizer=torch.optim.SGD(m.parameters(), lr=0.1), method_args={"tau": 1})
