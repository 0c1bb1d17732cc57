"""Shift transforms, source->target scenarios, domain streams and the domain-adaptation strategy."""
import pytest
import torch

from scenarios.domains import (
    ColorBackground, GaussianBlur, Inversion, ToRGB, domain_stream, source_target,
)
from scenarios.registry import SCENARIOS, load_all
from scenarios.shifts import Identity


def test_blur_inversion_rgb_and_color_background():
    x = torch.zeros(2, 1, 7, 7)
    x[:, :, 3, 3] = 1.0
    b = GaussianBlur(1.0)(x)
    k = GaussianBlur(1.0)._kernel(torch.float32)
    assert torch.allclose(b[0, 0, 1:6, 1:6], torch.outer(k, k))        # an impulse gives the kernel
    assert b.sum().item() == pytest.approx(2.0, rel=1e-5)
    sig = torch.zeros(1, 1, 9)
    sig[0, 0, 4] = 1.0
    assert torch.allclose(GaussianBlur(1.0)(sig)[0, 0, 2:7], k)
    assert torch.equal(Inversion()(x), 1 - x)
    assert ToRGB()(x).shape == (2, 3, 7, 7)
    c1, c2 = ColorBackground(seed=1)(x), ColorBackground(seed=1)(x)
    assert c1.shape == (2, 3, 7, 7) and torch.equal(c1, c2) and not torch.equal(c1, ColorBackground(seed=2)(x))
    assert 0 <= c1.min() and c1.max() <= 1
    with pytest.raises(ValueError, match="sigma"):
        GaussianBlur(0.0)
    with pytest.raises(ValueError, match="grid"):
        ColorBackground(grid=0)


def test_source_target_gives_labeled_source_unlabeled_target_and_labeled_target_test():
    bm = source_target("digits", GaussianBlur(1.0), seed=0)
    assert len(bm.train_stream) == 1 and len(bm.test_stream) == 2
    assert bm.kind == "source-target" and bm.n_classes == 10 and bm.input_shape == (1, 8, 8)
    assert bm.target_unlabeled.shape[1:] == (1, 8, 8)
    # disjoint halves: no target training image is a blurred copy of a source training image
    from scenarios.datasets import digits

    assert len(bm.source_train) + len(bm.target_train) == len(digits(seed=0)[0])
    assert torch.equal(bm.target_unlabeled, bm.target_train.x)
    assert torch.equal(bm.target_test.x, GaussianBlur(1.0)(bm.source_test.x))
    assert bm.train_stream[0].origin_stream.benchmark is bm
    with pytest.raises(ValueError, match="source_shift"):
        source_target("digits", ColorBackground(seed=0))


def test_domain_stream_hides_labels_after_the_first_domains():
    bm = domain_stream("digits", [Identity(), GaussianBlur(1.0), Inversion()], n_labeled=2)
    assert [sorted(e.classes_in_this_experience) for e in bm.train_stream][2] == [-1]
    assert -1 not in bm.train_stream[1].classes_in_this_experience
    assert all(-1 not in e.classes_in_this_experience for e in bm.test_stream)
    with pytest.raises(ValueError, match="n_labeled"):
        domain_stream("digits", [Identity()], n_labeled=2)


def test_scenarios_and_strategy_are_registered():
    from strategies.registry import STRATEGIES, load_all as load_strategies

    load_all()
    load_strategies()
    for name in ["digits-to-digitsm", "digits-to-blurred", "digits-to-inverted", "mnist1d-shear", "mnist1d-noise",
                 "domain-stream-digits"]:
        assert name in SCENARIOS
    assert "domain-adaptation" in STRATEGIES
    from kta_plugins.registry import PLUGINS

    for name in ["dann", "coral", "mmd", "cdan", "feature-matching"]:
        assert name in PLUGINS


def test_domain_adaptation_strategy_runs_a_stream_of_domains():
    from kta_plugins.adapt import CORAL, MaskedCrossEntropy
    from kta_plugins.nn import MLP
    from strategies.domain_adaptation import DomainAdaptation

    load_all()
    bm = SCENARIOS.build("domain-stream-digits")
    model = MLP(bm.input_shape, 10, hidden=(16,))
    s = DomainAdaptation(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), method="coral",
                         weight=100.0, stream=True, progress=False)
    assert isinstance(s.adaptation, CORAL) and isinstance(s._criterion, MaskedCrossEntropy)
    for exp in list(bm.train_stream)[:2]:
        s.train(exp)
    assert s.adaptation.buffer_x is not None
    with pytest.raises(ValueError, match="method"):
        DomainAdaptation(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), method="gan")


def test_domain_adaptation_method_args_one_way_and_rejects_what_the_method_does_not_take():
    from kta_plugins.adapt import DANN
    from kta_plugins.nn import MLP
    from strategies.domain_adaptation import DomainAdaptation

    model = MLP((1, 8, 8), 10, hidden=(16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    s = DomainAdaptation(model=model, optimizer=opt, method="dann", method_args={"lambda_max": 0.5, "head_lr": 0.01})
    assert isinstance(s.adaptation, DANN) and s.adaptation.lambda_max == 0.5 and s.adaptation.head_lr == 0.01
    for method, args in [("coral", {"head_lr": 0.1}), ("dann", {"entropy": True}), ("mmd", {"lambda_max": 1.0})]:
        with pytest.raises(ValueError, match=f"method_args: method '{method}'.*{next(iter(args))}"):
            DomainAdaptation(model=model, optimizer=opt, method=method, method_args=args)
    with pytest.raises(ValueError, match="method_args"):
        DomainAdaptation(model=model, optimizer=opt, method="none", method_args={"weight": 1.0})
    with pytest.raises(ValueError, match="own arguments"):
        DomainAdaptation(model=model, optimizer=opt, method="dann", method_args={"layer": "features"})
    # the old flat arguments: deprecated aliases that warn, naming the new way; still checked
    with pytest.warns(DeprecationWarning, match="method_args"):
        s = DomainAdaptation(model=model, optimizer=opt, method="cdan", entropy=True)
    assert s.adaptation.entropy is True
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="head_lr"):
        DomainAdaptation(model=model, optimizer=opt, method="coral", head_lr=0.1)
