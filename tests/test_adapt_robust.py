"""Issue 17: discriminator options, warm-up ramps, collapse guards, label-free model selection, new shifts."""
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kta_plugins.adapt import CDAN, CORAL, DANN, MMD
from kta_plugins.adapt.coral import coral_loss, relative_coral_loss
from kta_plugins.adapt.dann import SeededDropout, domain_head, domain_logits
from kta_plugins.adapt.guards import CollapseError, CollapseWarning
from kta_plugins.adapt.select import (dev_risk, entropy_score, importance_weights, iwcv_risk, select,
                                      select_setting, snd_score)
from kta_plugins.nn import MLP
from kta_plugins.nn.grl import ganin_lambda
from scenarios.datasets import TensorClassificationDataset, digits
from scenarios.domains import GaussianBlur, source_target
from scenarios.shifts import Contrast, LensWarp
from strategies import Naive


@pytest.fixture(scope="module")
def bm():
    train, test = digits(seed=0)
    pair = (TensorClassificationDataset(train.x[:400], train.y[:400]),
            TensorClassificationDataset(test.x[:150], test.y[:150]))
    return source_target(pair, GaussianBlur(1.0), seed=0)


def _train(bm, plugin, epochs=8, lr=0.05, loggers=()):
    from strategies.base import default_evaluator

    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(32,))
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9), train_epochs=epochs,
              train_mb_size=32, plugins=[plugin], progress=False, seed=0,
              evaluator=default_evaluator(loggers=loggers) if loggers else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s.train(bm.train_stream[0])
    return model, [w for w in caught if issubclass(w.category, CollapseWarning)]


# ------------------------------------------------------------------ discriminator options
def test_domain_head_has_the_requested_layers_dropout_and_batchnorm():
    head = domain_head(16, 32, layers=2, dropout=0.5, batch_norm=True, seed=0)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "SeededDropout"] * 2 + ["Linear"]
    assert [m.out_features for m in head if isinstance(m, nn.Linear)] == [32, 32, 1]
    assert [type(m).__name__ for m in domain_head(16, 32, layers=0)] == ["Linear"]
    # same seed, same weights, whatever the global RNG
    torch.manual_seed(5)
    a = domain_head(16, 32, seed=3)
    torch.manual_seed(6)
    b = domain_head(16, 32, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_seeded_dropout_draws_from_its_generator_and_is_identity_in_eval():
    d = SeededDropout(0.5)
    x = torch.ones(4, 100)
    d.generator = torch.Generator().manual_seed(1)
    y1 = d(x)
    d.generator = torch.Generator().manual_seed(1)
    torch.manual_seed(123)            # the global RNG does not matter
    y2 = d(x)
    assert torch.equal(y1, y2)
    assert set(y1.unique().tolist()) == {0.0, 2.0}            # inverted dropout: kept units scaled by 1/(1-p)
    d.eval()
    assert torch.equal(d(x), x)


def test_domain_logits_on_the_concatenated_batch_equal_separate_calls_without_batchnorm():
    head = domain_head(4, 8, dropout=0.0, seed=0)
    hs, ht = torch.randn(5, 4), torch.randn(7, 4)
    zs, zt = domain_logits(head, hs, ht, 1.0)
    assert torch.allclose(zs, head(hs).squeeze(1)) and torch.allclose(zt, head(ht).squeeze(1))


def test_dann_defaults_are_the_papers_discriminator(bm):
    dann = DANN()
    assert (dann.head_hidden, dann.head_layers, dann.head_dropout, dann.head_bn) == (256, 2, 0.5, False)
    _train(bm, dann, epochs=1)
    assert sum(isinstance(m, SeededDropout) for m in dann.head) == 2
    with pytest.raises(ValueError, match="head_dropout"):
        DANN(head_dropout=1.0)
    with pytest.raises(ValueError, match="head_layers"):
        CDAN(head_layers=-1)
    with pytest.raises(ValueError, match="guards"):
        MMD(guards="loud")


# ------------------------------------------------------------------ warm-up ramps and the CORAL loss
@pytest.mark.parametrize("cls", [CORAL, MMD])
def test_alignment_weight_follows_ganins_ramp(bm, cls):
    plugin = cls(weight=2.0)
    seen = []
    orig = plugin.alignment_loss

    def spy(hs, ht, out_s, out_t):
        loss = orig(hs, ht, out_s, out_t)
        seen.append((plugin.step, plugin.ramp()))
        return loss

    plugin.alignment_loss = spy
    _train(bm, plugin, epochs=2)
    total = plugin.total_steps
    assert seen[0] == (0, 0.0)                                  # no alignment at the first step
    for step, r in seen:
        assert r == pytest.approx(ganin_lambda(step / total))
    assert cls(warmup=False).ramp() == 1.0


def test_relative_coral_is_scale_invariant_and_matches_its_formula():
    torch.manual_seed(0)
    hs, ht = torch.randn(20, 6), torch.randn(30, 6) * 2 + 1
    r = relative_coral_loss(hs, ht)
    assert r.item() == pytest.approx(relative_coral_loss(10 * hs, 10 * ht).item(), rel=1e-5)
    cs, ct = torch.cov(hs.t()), torch.cov(ht.t())
    assert r.item() == pytest.approx((((cs - ct) ** 2).sum() / ((cs ** 2).sum() + (ct ** 2).sum())).item(), rel=1e-5)
    assert coral_loss(10 * hs, 10 * ht).item() == pytest.approx(1e4 * coral_loss(hs, ht).item(), rel=1e-4)
    # invariant to a joint rescaling (Euler): the gradient has no component along (hs, ht), so shrinking the
    # features cannot lower the loss
    a, b = hs.clone().requires_grad_(True), ht.clone().requires_grad_(True)
    relative_coral_loss(a, b).backward()
    radial = (a.grad * hs).sum() + (b.grad * ht).sum()
    assert abs(radial.item()) < 1e-5 * (a.grad.norm() * hs.norm() + b.grad.norm() * ht.norm()).item()
    a2 = hs.clone().requires_grad_(True)
    coral_loss(a2, ht).backward()
    assert (a2.grad * hs).sum().item() != pytest.approx(0.0, abs=1e-6)   # the raw loss has one


# ------------------------------------------------------------------ collapse guards
def test_guards_fire_on_dann_weight_10_without_dropout(bm):
    dann = DANN(weight=10.0, head_dropout=0.0)
    _, caught = _train(bm, dann, epochs=10)
    assert dann.guard_events, "a collapse guard should fire"
    assert len(caught) == len(dann.guard_events)                 # one warning per tripped guard
    assert all(e["plugin"] == "DANN" for e in dann.guard_events)
    assert any("weight" in str(w.message) for w in caught)       # names the argument to change


def test_guards_fire_on_mmd_weight_100(bm):
    mmd = MMD(weight=100.0)
    _, caught = _train(bm, mmd, epochs=10)
    guards = {e["guard"] for e in mmd.guard_events}
    assert "feature-variance" in guards or "source-accuracy" in guards
    assert any("lower weight" in str(w.message) for w in caught)


@pytest.mark.parametrize("cls", [DANN, CDAN, CORAL, MMD])
def test_guards_stay_silent_on_the_defaults(bm, cls):
    plugin = cls()
    _, caught = _train(bm, plugin, epochs=10)
    assert plugin.guard_events == [] and caught == []


def test_guard_as_error_and_logged_to_scalar_loggers(bm):
    from avalanche.logging import BaseLogger

    class Recorder(BaseLogger):
        def __init__(self):
            super().__init__()
            self.seen = []

        def log_single_metric(self, name, value, x_plot):
            self.seen.append(name)

    with pytest.raises(CollapseError, match="lower weight"):
        _train(bm, MMD(weight=100.0, guards="error"), epochs=10)
    rec = Recorder()
    mmd = MMD(weight=100.0)
    _train(bm, mmd, epochs=10, loggers=[rec])
    assert any(n.startswith("guard/MMD/") and n.endswith(mmd.guard_events[0]["guard"]) for n in rec.seen)
    assert "guard/MMD/feature_var" in rec.seen and "guard/MMD/source_acc" in rec.seen   # epoch statistics
    off = MMD(weight=100.0, guards="off")
    _, caught = _train(bm, off, epochs=10)
    assert off.guard_events == [] and caught == []


def test_guard_events_survive_the_state_dict(bm):
    mmd = MMD(weight=100.0)
    _train(bm, mmd, epochs=10)
    other = MMD(weight=100.0)
    other.load_state_dict(mmd.state_dict())
    assert other.guard_events == mmd.guard_events != []


# ------------------------------------------------------------------ label-free selection
def test_iwcv_and_dev_reduce_to_the_plain_risk_with_equal_weights():
    torch.manual_seed(0)
    z, y = torch.randn(50, 4), torch.randint(0, 4, (50,))
    ce = F.cross_entropy(z, y).item()
    w = torch.ones(50)
    assert iwcv_risk(z, y, w) == pytest.approx(ce, rel=1e-6)
    assert dev_risk(z, y, w) == pytest.approx(ce, rel=1e-6)


def test_dev_matches_its_formula():
    torch.manual_seed(1)
    z, y = torch.randn(40, 3), torch.randint(0, 3, (40,))
    w = torch.rand(40) * 2
    l = F.cross_entropy(z, y, reduction="none").double()
    wd = w.double()
    L = wd * l
    eta = -torch.cov(torch.stack([L, wd]))[0, 1] / wd.var()
    assert dev_risk(z, y, w) == pytest.approx(float(L.mean() + eta * wd.mean() - eta), rel=1e-6)


def test_importance_weights_follow_the_density_ratio():
    g = torch.Generator().manual_seed(0)
    fs = torch.randn(400, 2, generator=g)
    ft = torch.randn(400, 2, generator=g) + torch.tensor([1.5, 0.0])
    val = torch.tensor([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    w = importance_weights(fs, ft, val)
    assert w[0] < w[1] < w[2]                     # samples on the target's side weigh more
    # log p_t/p_s = 1.5 x - 1.125 for N(1.5, 1) / N(0, 1): linear in x; the L2 penalty shrinks the slope a little
    lw = torch.log(w)
    slope = float(lw[2] - lw[0]) / 4
    assert float(lw[1] - lw[0]) / 2 == pytest.approx(slope, rel=1e-4)
    assert 1.0 < slope < 1.6
    same = importance_weights(fs[:200], fs[200:], val)
    assert torch.allclose(same, torch.ones(3), atol=0.3)


def test_snd_and_entropy_scores():
    confident = torch.eye(5).repeat(10, 1) * 10
    uniform = torch.zeros(50, 5)
    assert entropy_score(confident) < entropy_score(uniform)
    assert entropy_score(uniform) == pytest.approx(math.log(5), rel=1e-5)
    assert snd_score(uniform) == pytest.approx(math.log(49), rel=1e-4)    # every neighbour equally close
    assert select([{"snd": 1.0}, {"snd": 2.0}], "snd") == 1
    assert select([{"dev": 1.0}, {"dev": 2.0}], "dev") == 0
    with pytest.raises(ValueError, match="criterion"):
        select([{"dev": 1.0}], "accuracy")


def test_label_free_selection_reads_no_target_label(bm):
    """Candidates trained with the target's inputs only; garbage target labels change no score."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import domain_adaptation as example

    kwargs = dict(methods=["CORAL"], epochs=1)
    real = example.suite_cell("digits-blur", "mlp", 0, **kwargs)
    garbage = example.suite_cell("digits-blur", "mlp", 0, target_labels=False, **kwargs)
    # every row but the target oracle (trained on target labels by definition, never a candidate)
    assert [r["scores"] for r in real if r["method"] != "target oracle"] == \
        [r["scores"] for r in garbage if r["method"] != "target oracle"]
    cand = [r for r in real if r["method"] == "CORAL"]
    for c in ("dev", "iwcv", "snd", "entropy"):
        other = [r["scores"] for r in garbage if r["method"] == "CORAL"]
        assert select([r["scores"] for r in cand], c) == select(other, c)
    assert [r["acc"] for r in real] != [r["acc"] for r in garbage]   # the labels were indeed replaced


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # a 1-epoch cell may have no gap to average
def test_suite_trains_only_missing_runs_and_keeps_variants_out_of_defaults(tmp_path, monkeypatch):
    """``--methods`` / ``--out``: a widened grid trains only its new points; a variant (fixed arguments off the
    defaults) has no default row and is not run by ``--heldout``; runs outside the grid are not tabulated."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import domain_adaptation as example

    out = str(tmp_path / "suite.jsonl")
    monkeypatch.setattr(example, "SUITE_GRID", {"CORAL": ("weight", [10.0])})
    args = dict(cases=["digits-blur"], archs=["mlp"], seeds=[0], methods=["CORAL"], epochs=1, out=out)
    first = example.run_suite(**args)
    assert sorted((r["method"], r["value"]) for r in first) == [("CORAL", 10.0), ("source only", None),
                                                                 ("target oracle", None)]
    grid = {"CORAL": ("weight", [10.0, 100.0]), "CORAL-rel": ("weight", [0.1], {"normalize": True})}
    monkeypatch.setattr(example, "SUITE_GRID", grid)
    monkeypatch.setitem(example.SUITE_PLUGINS, "CORAL-rel", CORAL)
    rows = example.run_suite(**{**args, "methods": ["CORAL", "CORAL-rel"]})
    with open(out) as f:
        saved = [line for line in f if line.strip()]
    assert len(rows) == len(saved) == 5                    # 3 kept + CORAL 100 + CORAL-rel 0.1, nothing retrained
    rel = next(r for r in rows if r["method"] == "CORAL-rel")
    assert rel["acc"] != next(r for r in rows if r["method"] == "CORAL" and r["value"] == 10.0)["acc"]
    assert example._default_value("CORAL-rel") is None and example._runs("CORAL-rel", grid=False) == []
    assert example._runs("CORAL", grid=False) == [CORAL().weight]
    assert "CORAL-rel" in example.suite_tables(rows) and "CORAL-rel" not in example.suite_case_table(rows)
    monkeypatch.setattr(example, "SUITE_GRID", {"CORAL": ("weight", [10.0])})
    assert not any(r["value"] == 100.0 for r in example._kept(rows))   # outside the grid: not tabulated


def test_suite_reads_records_saved_before_the_coral_default_changed(tmp_path):
    """Version-1 records (no ``"v"``: "CORAL" was the relative loss, "CORAL-raw" the paper's) are renamed by the
    loss they were trained with, so ``--table`` and ``--out`` find them and nothing is retrained."""
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import domain_adaptation as example

    base = dict(case="digits-blur", arch="mlp", seed=0, acc=0.5, src_acc=0.9, scores={}, guards=[])
    old = [{**base, "method": "CORAL", "value": 0.1}, {**base, "method": "CORAL-raw", "value": 10.0},
           {**base, "method": "DANN", "value": 0.3}, {**base, "method": "source only", "value": None}]
    new = [{**base, "v": 2, "method": "CORAL", "value": 100.0}, {**base, "v": 2, "method": "CORAL-rel", "value": 1.0}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in old + new))
    got = [(r["method"], r["value"], r["v"]) for r in example.load_records(str(path))]
    assert got == [("CORAL-rel", 0.1, 2), ("CORAL", 10.0, 2), ("DANN", 0.3, 2), ("source only", None, 2),
                   ("CORAL", 100.0, 2), ("CORAL-rel", 1.0, 2)]
    assert example.SUITE_GRID["CORAL"][1] == [10.0, 100.0, 1000.0, 10000.0, 100000.0]
    assert example._default_value("CORAL") == CORAL().weight == 10.0 and CORAL().normalize is False
    assert example.SUITE_GRID["CORAL-rel"][2] == {"normalize": True}


def test_select_setting_picks_by_the_criterion(bm):
    models = {}
    for w in (0.0, 1.0):
        m, _ = _train(bm, CORAL(weight=w, guards="off"), epochs=2)
        models[w] = m
    xs, ys = bm.source_test.tensors
    name, scores = select_setting(models, (xs, ys), bm.source_train.tensors[0], bm.target_unlabeled, "dev")
    assert name in models and set(scores) == set(models)
    assert name == min(scores, key=lambda k: scores[k]["dev"])


# ------------------------------------------------------------------ new shifts
def test_contrast_and_lens_warp():
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(Contrast(0.5, 0.2)(x), 0.5 * x + 0.2)
    assert torch.allclose(LensWarp(0.0)(x), x, atol=1e-5)
    y = LensWarp(-0.35)(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    with pytest.raises(ValueError, match="gain"):
        Contrast(gain=0.0)
    with pytest.raises(ValueError, match="k"):
        LensWarp(k=-2.0)


def test_target_collapse_guard_fires_when_target_predictions_pile_on_one_class():
    from types import SimpleNamespace

    from kta_plugins.adapt.guards import CollapseGuard

    owner = SimpleNamespace(technique="CDAN", guard_events=[])
    guard = CollapseGuard(owner, "warn", advice={"target-collapse": "lower weight"}, patience=5)
    guard.reset(40, None)
    y = torch.arange(32) % 10
    strategy = SimpleNamespace(mb_output=F.one_hot(y, 10).float() * 5, mb_y=y)   # source: balanced, correct
    collapsed = torch.zeros(32, 10)
    collapsed[:, 3] = 5.0                                                        # target: all class 3
    with pytest.warns(CollapseWarning, match="collapse onto class 3"):
        for step in range(40):
            guard.observe(strategy, step, target_logits=collapsed)
    assert [e["guard"] for e in owner.guard_events] == ["target-collapse"]
    # balanced target predictions: silent
    owner.guard_events.clear()
    guard.reset(40, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        for step in range(40):
            guard.observe(strategy, step, target_logits=strategy.mb_output)
    assert owner.guard_events == []


def test_kta_compare_marks_a_run_whose_guard_fired(tmp_path):
    from strategies.compare import compare

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("""\
seeds: [0]
scenarios: [digits-to-blurred]
settings: {epochs: 8, lr: 0.05, batch_size: 32}
strategies:
  - {name: mmd-broken, strategy: naive, plugins: ["mmd:weight=100"]}
  - {name: mmd-default, strategy: naive, plugins: ["mmd"]}
""")
    broken, default = compare(cfg, out_dir=tmp_path / "out")
    assert broken["status"] == "finished" and broken["guard_events"]
    assert "MMD" in broken["message"] and "guard" in broken["message"]
    assert default["guard_events"] == [] and "guard" not in (default["message"] or "")


def test_fair_adversary_guards_fire_on_a_broken_weight_and_not_on_the_defaults():
    from kta_plugins.adapt import FairAdversary
    from scenarios.attributes import fair_digits

    bm = fair_digits(seed=0)
    events = {}
    for name, plugin in (("default", FairAdversary()), ("broken", FairAdversary(weight=30.0, schedule=False))):
        torch.manual_seed(0)
        model = MLP(bm.input_shape, 10, hidden=(64,))
        s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                  train_epochs=15, plugins=[plugin], progress=False, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s.train(bm.train_stream[0])
        events[name] = {e["guard"] for e in plugin.guard_events}
    assert events["default"] == set()
    assert events["broken"] & {"feature-variance", "source-accuracy"}
