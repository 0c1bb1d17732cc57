"""Plugins compose in any order: the loss ledger, scoped extra forwards, the optimizer assembly,
and check_composition over every pair of registered plugins."""
import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from kta_plugins.compose import CRITERION, add_loss_term, extra_forward, loss_ledger, scale_loss_term
from kta_plugins.nn import MLP, FeatureTap
from kta_plugins.registry import load_all
from kta_plugins.testing import (_default_model, _reference_target, check_composition, registry_factories,
                                 tiny_streams)

load_all()


def _stream():
    return tiny_streams(n_train=128, n_test=32)["class-incremental"]


def _naive(plugins, model=None, **kw):
    from strategies import Naive

    torch.manual_seed(0)
    model = model or _default_model()
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=32,
                 plugins=plugins, progress=False, **kw)


def _teacher():
    from kta_plugins.testing import reference_teacher

    return reference_teacher()


# ------------------------------------------------------------------ the five cases of the issue
@pytest.mark.parametrize("coral_first", [True, False])
def test_fitnets_reads_the_minibatch_features_whatever_the_order_of_an_aligner(coral_first):
    """Regression: CORAL's extra forward on target data overwrote the student's tap, so FitNets listed
    after it read target features (0 of 4 steps right)."""
    from kta_plugins.adapt import CORAL
    from kta_plugins.distill import FitNets

    coral = CORAL(target=_reference_target(), weight=1.0)
    fit = FitNets(teacher=_teacher(), student_layer="features")
    seen = []
    from avalanche.core import SupervisedPlugin

    class Check(SupervisedPlugin):  # after both plugins: is FitNets' tap still the minibatch's?
        def before_backward(self, strategy, **kwargs):
            with torch.no_grad():
                ref = strategy.model.features(strategy.mb_x)
            seen.append(torch.allclose(fit._student_tap["features"].detach(), ref))

    plugins = [coral, fit, Check()] if coral_first else [fit, coral, Check()]
    s = _naive(plugins)
    s.train(_stream().train_stream[0])
    assert seen and all(seen), seen


@pytest.mark.parametrize("dann_first", [True, False])
def test_dann_head_trains_whatever_the_order_of_layerwise_lr(dann_first):
    """Regression: DANN listed before LayerwiseLR dropped the domain head out of the optimizer."""
    from kta_plugins.adapt import DANN
    from kta_plugins.transfer import LayerwiseLR

    dann, lw = DANN(target=_reference_target()), LayerwiseLR(decay=0.5)
    s = _naive([dann, lw] if dann_first else [lw, dann])
    exp = _stream().train_stream[0]
    s.train(exp)
    before = [p.detach().clone() for p in dann.head.parameters()]
    in_opt = {id(p) for g in s.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in dann.head.parameters())
    s.train(_stream().train_stream[1])
    assert all(not torch.equal(b, p) for b, p in zip(before, dann.head.parameters()))
    # the layer-wise rates hold next to the head's group
    rates = {g["kta_group"]: g["lr"] for g in s.optimizer.param_groups}
    assert rates["dann.head"] == pytest.approx(0.05)
    assert sorted(v for k, v in rates.items() if k.startswith("model")) == pytest.approx([0.025, 0.05])


def test_domain_adaptation_strategy_keeps_the_head_with_layerwise_lr():
    from kta_plugins.transfer import LayerwiseLR
    from strategies.domain_adaptation import DomainAdaptation

    torch.manual_seed(0)
    model = _default_model()
    s = DomainAdaptation(method="dann", target=_reference_target(), model=model,
                         optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=32,
                         plugins=[LayerwiseLR()], progress=False)
    head_owner = s.plugins[0]
    s.train(_stream().train_stream[0])
    before = [p.detach().clone() for p in head_owner.head.parameters()]
    s.train(_stream().train_stream[1])
    assert all(not torch.equal(b, p) for b, p in zip(before, head_owner.head.parameters()))


def test_two_kd_plugins_multiply_the_criterion_weight_and_never_go_negative():
    """Regression: each KD subtracted alpha * CE, so two at 0.9 gave CE weight -0.8."""
    from avalanche.core import SupervisedPlugin

    from kta_plugins.distill import KD

    t1, t2 = _teacher(), _teacher()
    with torch.no_grad():
        t2.classifier.weight.mul_(-1.0)
    kd1, kd2 = KD(teacher=t1, alpha=0.9, temperature=2.0), KD(teacher=t2, alpha=0.9, temperature=2.0)
    got = []

    class Check(SupervisedPlugin):
        def after_backward(self, strategy, **kwargs):
            out, y, x = strategy.mb_output, strategy.mb_y, strategy.mb_x
            ce = F.cross_entropy(out, y)

            def kl(t):
                return F.kl_div(F.log_softmax(out / 2, 1), F.log_softmax(t(x) / 2, 1), reduction="batchmean",
                                log_target=True) * 4

            expected = 0.1 * 0.1 * ce + 0.9 * kl(t1) + 0.9 * kl(t2)
            got.append((float(strategy.loss), float(expected), loss_ledger(strategy).weight(CRITERION)))

    s = _naive([kd1, kd2, Check()])
    s.train(_stream().train_stream[0])
    assert got
    for loss, expected, w in got:
        assert w == pytest.approx(0.01)
        assert loss == pytest.approx(expected, rel=1e-5)


def test_domain_stream_warns_when_ewc_importances_are_zero():
    """Regression: EWC on unlabeled domains (masked loss) learned nothing and nothing said so."""
    from avalanche.training.plugins import EWCPlugin

    from scenarios.domains import GaussianBlur, domain_stream
    from scenarios.shifts import Identity
    from strategies.domain_adaptation import DomainAdaptation

    torch.manual_seed(0)
    bm = domain_stream("digits", [Identity(), GaussianBlur(1.0)], n_labeled=1)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    s = DomainAdaptation(method="coral", stream=True, model=model, train_mb_size=64,
                         optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                         plugins=[EWCPlugin(ewc_lambda=1.0)], progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s.train(bm.train_stream[0])
        first = [w for w in caught if "importances" in str(w.message)]
        s.train(bm.train_stream[1])
    later = [w for w in caught if "importances" in str(w.message)]
    assert not first  # the labeled domain gives EWC its importances
    assert len(later) == 1 and "EWCPlugin" in str(later[0].message)


def test_dkd_warmup_counts_only_epochs_that_distil():
    """Regression: with teacher='previous' the ramp was spent during the first experience."""
    from kta_plugins.distill import DKD

    dkd = DKD(teacher="previous", warmup_epochs=2)
    s = _naive([dkd], train_epochs=2)
    s.train(_stream().train_stream[0])
    assert dkd.epochs_seen == 0  # no teacher in the first experience: no distillation, no ramp
    s.train(_stream().train_stream[1])
    assert dkd.epochs_seen == 2


# ------------------------------------------------------------------ the meeting points
def test_ledger_terms_sum_to_the_loss_and_reweighting_is_a_product():
    from avalanche.core import SupervisedPlugin

    class A(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            add_loss_term(strategy, "pen", strategy.mb_output.pow(2).mean(), weight=0.5, owner=self)
            scale_loss_term(strategy, CRITERION, 0.5, owner=self)

    class B(A):
        pass

    class Check(SupervisedPlugin):
        def after_backward(self, strategy, **kwargs):
            led = loss_ledger(strategy)
            c = led.contributions()
            assert set(c) == {"criterion", "pen", "pen#2"}
            assert led.weight(CRITERION) == pytest.approx(0.25)
            assert float(sum(c.values())) == pytest.approx(float(strategy.loss), rel=1e-6)
            self.ok = True

    check = Check()
    s = _naive([A(), B(), check])
    s.train(_stream().train_stream[0])
    assert check.ok


def test_ledger_rejects_negative_weights_naming_the_term():
    from avalanche.core import SupervisedPlugin

    class Bad(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            scale_loss_term(strategy, CRITERION, -0.5, owner=self)

    s = _naive([Bad()])
    with pytest.raises(ValueError, match="criterion"):
        s.train(_stream().train_stream[0])


def test_extra_forward_leaves_taps_and_output_untouched():
    model = _default_model()
    tap = FeatureTap(model, ["features"])
    x, other = torch.randn(5, 1, 8, 8), torch.randn(7, 1, 8, 8)

    class S:  # the few strategy attributes extra_forward reads
        pass

    s = S()
    s.model = model
    s.mb_output = model(x)
    kept = tap["features"]
    out, feats = extra_forward(s, other, layers=("features",))
    assert tap["features"] is kept and out.shape == (7, 4) and feats["features"].shape[0] == 7
    assert feats["features"].requires_grad  # the caller's features keep their graph


def test_arbitrating_plugins_act_after_every_term_whatever_their_position():
    """StaticWeights first in the list still weights the penalty another plugin adds after it."""
    from avalanche.core import SupervisedPlugin

    from kta_plugins.mtl import StaticWeights

    class Penalty(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            add_loss_term(strategy, "pen", 10.0 * sum((p ** 2).sum() for p in strategy.model.parameters()),
                          owner=self)

    got = []

    class Check(SupervisedPlugin):
        def after_backward(self, strategy, **kwargs):
            got.append((float(strategy.loss), float(strategy._criterion(strategy.mb_output, strategy.mb_y))))

    s = _naive([StaticWeights({"regularizers": 0.0}), Penalty(), Check()])
    s.train(_stream().train_stream[0])
    assert got and all(l == pytest.approx(c, rel=1e-5) for l, c in got)


def test_two_arbitrating_plugins_are_refused_naming_both():
    from kta_plugins.mtl import DWA, PCGrad

    with pytest.raises(ValueError, match="DWA.*PCGrad|PCGrad.*DWA"):
        _naive([DWA(), PCGrad()])


def test_optimizer_state_of_surviving_parameters_is_kept_across_experiences():
    from kta_plugins.transfer import LayerwiseLR

    torch.manual_seed(0)
    model = _default_model()
    from strategies import Naive

    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
              train_mb_size=32, plugins=[LayerwiseLR()], progress=False)
    s.train(_stream().train_stream[0])
    buf = {id(p): s.optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()}
    s.make_optimizer()
    assert all(torch.equal(buf[id(p)], s.optimizer.state[p]["momentum_buffer"]) for p in model.parameters())


def test_user_parameter_groups_are_kept_by_the_assembly():
    from kta_plugins.adapt import DANN

    torch.manual_seed(0)
    model = _default_model()
    from strategies import Naive

    opt = torch.optim.SGD([{"params": model.features.parameters(), "lr": 0.01},
                           {"params": model.classifier.parameters()}], lr=0.1)
    s = Naive(model=model, optimizer=opt, train_mb_size=32, plugins=[DANN(target=_reference_target())],
              progress=False)
    s.train(_stream().train_stream[0])
    lr_of = {id(p): g["lr"] for g in s.optimizer.param_groups for p in g["params"]}
    assert all(lr_of[id(p)] == 0.01 for p in model.features.parameters())
    assert all(lr_of[id(p)] == 0.1 for p in model.classifier.parameters())


def test_tensorboard_has_a_training_loss_curve_per_term(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kta_plugins.distill import KD
    from kta_plugins.transfer import L2SP
    from strategies import Naive

    torch.manual_seed(0)
    model = _default_model()
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=32,
              plugins=[KD(teacher=_teacher()), L2SP()], progress=False, log_dir=str(tmp_path / "tb"))
    s.train(_stream().train_stream[0])
    for lg in s.evaluator.loggers:
        if hasattr(lg, "writer"):
            lg.writer.flush()
    ev = EventAccumulator(str(tmp_path / "tb"))
    ev.Reload()
    tags = set(ev.Tags()["scalars"])
    assert {"train/loss/criterion", "train/loss/kd", "train/loss/l2sp", "train/loss/total"} <= tags
    total = [e.value for e in ev.Scalars("train/loss/total")]
    parts = [sum(ev.Scalars(f"train/loss/{n}")[i].value for n in ("criterion", "kd", "l2sp"))
             for i in range(len(total))]
    assert len(total) >= 2 and all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(total, parts))


# ------------------------------------------------------------------ check_composition over the registry
FACTORIES = registry_factories()
#: pairs that cannot run on a common tiny scenario (their check models differ)
_MODELS = {n: f.check_model for n, f in FACTORIES.items()}
PAIRS = [p for p in itertools.combinations(sorted(FACTORIES), 2)
         if not (_MODELS[p[0]] and _MODELS[p[1]] and _MODELS[p[0]] is not _MODELS[p[1]])]
#: pairs refused up front (two plugins re-weighting / arbitrating the same loss terms)
ARBITRATING = {"static-weights", "dwa", "uncertainty", "gradnorm", "mgda", "pcgrad", "cagrad"}


#: pairs refused up front: two plugins that rewrite the model's layers
SURGERY = {"lora", "adapter"}
#: catalogue pairs refused by design (``refuses_roles``, see kta_plugins/avalanche_plugins.py): LFL freezes
#: the last layer (with a freezing plugin nothing trains), SI / RWalk key importances by parameter name
#: (layer surgery renames them), MIR needs a per-sample criterion (CoPE's PPP loss has none)
REFUSED = {frozenset(p) for p in [
    ("lfl", "freeze"), ("lfl", "lpft"), ("lfl", "gradual-unfreeze"),
    ("si", "lora"), ("si", "adapter"), ("rwalk", "lora"), ("rwalk", "adapter"), ("rwalk", "cope"),
    ("mir", "cope")]}


def plugin_class(name):
    return type(FACTORIES[name]()).__name__


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_every_pair_of_registered_plugins_composes_or_is_refused(a, b):
    report = check_composition(FACTORIES[a], FACTORIES[b], names=[a, b], raise_on_failure=False)
    status, why = report.results["composes"]
    if {a, b} <= ARBITRATING or {a, b} <= SURGERY or {a, b} in REFUSED:
        assert status == "refused", str(report)
        assert plugin_class(a) in why and plugin_class(b) in why   # the message names both
        return
    assert not report.failed, str(report)
    if status == "skipped":  # the pair shares no tiny scenario (a plugin needs another model / data)
        assert "does not train alone" in why
    else:
        assert status == "passed", str(report)
