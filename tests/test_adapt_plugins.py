"""Domain adaptation plugins end to end on tiny streams; errors before the first step."""
import pytest
import torch

from kta_plugins.adapt import CDAN, CORAL, DANN, MMD, FeatureAugmentation, FeatureMatching
from kta_plugins.nn import CNN1d, MLP
from kta_plugins.nn.grl import ganin_lambda
from scenarios.datasets import TensorClassificationDataset, digits
from scenarios.domains import GaussianBlur, Inversion, domain_stream, source_target
from scenarios.shifts import Identity
from strategies import Naive


def _small_pair(n_train=300, n_test=150):
    train, test = digits(seed=0)
    return (TensorClassificationDataset(train.x[:n_train], train.y[:n_train]),
            TensorClassificationDataset(test.x[:n_test], test.y[:n_test]))


@pytest.fixture(scope="module")
def bm():
    return source_target(_small_pair(), GaussianBlur(1.0), seed=0)


def _strategy(model, plugins, epochs=1, lr=0.05):
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), train_epochs=epochs,
                 train_mb_size=32, plugins=plugins, progress=False, seed=0)


def test_dann_head_is_trained_outside_the_model_and_follows_the_schedule(bm):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    dann = DANN(lambda_max=0.5, head_hidden=8)          # target found on the benchmark
    s = _strategy(model, [dann], epochs=2)
    seen = []

    class Spy:
        def __getattr__(self, name):
            if name.startswith(("before_", "after_")):
                return lambda strategy, **kw: None
            raise AttributeError(name)

        def after_backward(self, strategy, **kw):
            seen.append((dann.step, dann.last_lambda))
            if len(seen) == 1:
                Spy.head0 = [p.detach().clone() for p in dann.head.parameters()]

    s.plugins.append(Spy())
    s.train(bm.train_stream[0])
    model_ids = {id(p) for p in model.parameters()}
    opt_ids = {id(p) for g in s.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in model_ids for p in dann.head.parameters())
    assert all(id(p) in opt_ids for p in dann.head.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(Spy.head0, dann.head.parameters()))  # the head learned
    total = dann.total_steps
    assert total == 2 * -(-len(bm.source_train) // 32)
    for step, lam in seen:
        assert lam == pytest.approx(0.5 * ganin_lambda(step / total))
    assert seen[0][1] == 0.0 and seen[-1][1] > 0.45


def test_ganin_lr_anneals_every_group_including_the_domain_head_and_restores_them(bm):
    from avalanche.core import SupervisedPlugin

    from kta_plugins.adapt.dann import GaninLR
    from kta_plugins.nn.grl import ganin_lr_factor

    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    sched, dann = GaninLR(), DANN(head_hidden=8, head_lr=0.01)
    s = _strategy(model, [sched, dann], epochs=2, lr=0.05)   # GaninLR first: it sees the head group late
    seen = []

    class Spy(SupervisedPlugin):
        def before_update(self, strategy, **kw):
            seen.append((sched.step, [g["lr"] for g in strategy.optimizer.param_groups]))

    s.plugins.append(Spy())
    s.train(bm.train_stream[0])
    total = sched.total_steps
    assert total == 2 * -(-len(bm.source_train) // 32) and len(seen) == total
    for step, lrs in seen:
        f = ganin_lr_factor(step / total)
        assert lrs == pytest.approx([0.05 * f, 0.01 * f])
    assert seen[-1][1][0] < 0.2 * 0.05
    assert [g["lr"] for g in s.optimizer.param_groups] == [0.05, 0.01]    # restored after the experience
    with pytest.raises(ValueError, match="beta"):
        GaninLR(beta=-1.0)


def test_dann_without_target_fails_before_the_first_step():
    pair = _small_pair()
    from scenarios.streams import domain_incremental

    plain = domain_incremental(pair, [Identity()])
    model = MLP((1, 8, 8), 10, hidden=(16,))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="DANN: no target data"):
        _strategy(model, [DANN()]).train(plain.train_stream[0])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("cls", [DANN, CORAL, MMD, CDAN])
def test_missing_layer_is_named_before_the_first_step(bm, cls):
    model = MLP((1, 8, 8), 10, hidden=(16,))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="layer='backbone'"):
        _strategy(model, [cls(layer="backbone")]).train(bm.train_stream[0])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_different_feature_widths_fail_before_the_first_step():
    # A 1-D CNN runs on any length: source signals of length 40, target of length 60 -> widths 125 vs 200.
    g = torch.Generator().manual_seed(0)
    src = TensorClassificationDataset(torch.randn(64, 1, 40, generator=g), torch.randint(0, 3, (64,), generator=g))
    from scenarios.streams import domain_incremental

    stream = domain_incremental((src, src), [Identity()])
    model = CNN1d((1, 40), 3)
    with pytest.raises(ValueError, match=r"CORAL: source and target feature widths differ at layer 'features'"):
        _strategy(model, [CORAL(target=torch.randn(32, 1, 60))]).train(stream.train_stream[0])


def test_target_inputs_the_model_cannot_run_are_named(bm):
    model = MLP((1, 8, 8), 10, hidden=(16,))
    with pytest.raises(ValueError, match=r"MMD: the model cannot run on the target inputs of shape \(3, 8, 8\)"):
        _strategy(model, [MMD(target=torch.rand(16, 3, 8, 8))]).train(bm.train_stream[0])


@pytest.mark.parametrize("make", [lambda: DANN(), lambda: CORAL(weight=100.0), lambda: MMD(),
                                  lambda: CDAN(entropy=True), lambda: CDAN(max_dim=32)])
def test_alignment_plugins_train_end_to_end(bm, make):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    plugin = make()
    s = _strategy(model, [plugin])
    s.train(bm.train_stream[0])
    assert torch.isfinite(torch.tensor(plugin.last_alignment))
    res = s.eval(bm.test_stream)
    assert any("Top1_Acc_Exp" in k for k in res)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_alignment_reduces_the_discrepancy(bm):
    """MMD training lowers the MMD between source and target features compared with source-only training."""
    from kta_plugins.adapt import mmd_loss

    def final_mmd(plugins):
        torch.manual_seed(0)
        model = MLP((1, 8, 8), 10, hidden=(16,))
        _strategy(model, plugins, epochs=5).train(bm.train_stream[0])
        with torch.no_grad():
            return float(mmd_loss(model.features(bm.source_train.x), model.features(bm.target_unlabeled)))

    assert final_mmd([MMD(weight=5.0)]) < final_mmd([])


def test_stream_mode_aligns_unlabeled_domains_with_a_buffer():
    bm = domain_stream(_small_pair(), [Identity(), GaussianBlur(1.0), Inversion()], n_labeled=1)
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    coral = CORAL(stream=True, weight=100.0, buffer_size=60)
    from kta_plugins.adapt import MaskedCrossEntropy

    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), criterion=MaskedCrossEntropy(),
              plugins=[coral], progress=False, seed=0)
    s.train(bm.train_stream[0])
    assert coral.buffer_x.shape == (60, 1, 8, 8) and set(coral.buffer_d.tolist()) == {0}
    assert torch.isnan(torch.tensor(coral.last_alignment))        # no past domain: nothing aligned
    s.train(bm.train_stream[1])                                     # unlabeled: only CORAL trains
    assert torch.isfinite(torch.tensor(coral.last_alignment))
    assert coral.buffer_d.tolist().count(0) == 30 and coral.buffer_d.tolist().count(1) == 30
    # labels are kept for the labeled domain (replayed), -1 for the unlabeled one
    assert (coral.buffer_y[coral.buffer_d == 0] >= 0).all() and (coral.buffer_y[coral.buffer_d == 1] == -1).all()
    s.train(bm.train_stream[2])
    assert sorted(set(coral.buffer_d.tolist())) == [0, 1, 2] and len(coral.buffer_x) == 60


def test_feature_matching_pulls_target_features_onto_a_frozen_source_copy():
    train, _ = _small_pair()
    xs = train.x[:64]
    xt = Inversion()(xs)
    from scenarios.streams import domain_incremental

    stream = domain_incremental(_small_pair(), [Identity()])
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    fm = FeatureMatching(pairs=(xs, xt), weight=5.0)
    with torch.no_grad():
        gap0 = float(((model.features(xs) - model.features(xt)) ** 2).mean())
    s = _strategy(model, [fm], epochs=3)
    s.train(stream.train_stream[0])
    anchor0 = {k: v.clone() for k, v in fm.anchor.state_dict().items()}
    s.train(stream.train_stream[0])
    assert all(torch.equal(anchor0[k], v) for k, v in fm.anchor.state_dict().items())  # frozen bit for bit
    assert not any(p.requires_grad for p in fm.anchor.parameters())
    with torch.no_grad():
        matched = float(((fm.anchor.features(xs) - model.features(xt)) ** 2).mean())
    assert matched < gap0 and fm.last_matching < gap0
    with pytest.raises(ValueError, match="no paired data"):
        _strategy(MLP((1, 8, 8), 10), [FeatureMatching()]).train(stream.train_stream[0])
    with pytest.raises(ValueError, match="pairs"):
        FeatureMatching(pairs=(xs, xt[:10]))


def test_feature_augmentation_wrapper_trains_with_domain_task_labels():
    from scenarios.streams import task_incremental

    pair = _small_pair()
    bm = task_incremental(pair, n_experiences=2, class_order=list(range(10)))  # task labels 0 and 1 = domains
    torch.manual_seed(0)
    net = FeatureAugmentation(MLP((3, 8, 8), 10, hidden=(16,)), n_domains=2)
    s = _strategy(net, [])
    for exp in bm.train_stream:
        s.train(exp)
    x = pair[0].x[:4]
    assert net(x, 0).shape == (4, 10)
    # The target-only block's weights never see source inputs: a source batch gives them no gradient.
    net.zero_grad()
    net(x, 0).sum().backward()
    w = net.model.features[1].weight.grad.view(16, 3, 64)
    assert w[:, 2].abs().sum() == 0 and w[:, 1].abs().sum() > 0


@pytest.mark.parametrize("cls, kwargs, name", [
    (DANN, {"lambda_max": -1.0}, "lambda_max"), (DANN, {"gamma": 0.0}, "gamma"),
    (DANN, {"head_hidden": -1}, "head_hidden"), (DANN, {"layer": 3}, "layer"),
    (CORAL, {"weight": float("nan")}, "weight"), (CORAL, {"target_mb_size": 1}, "target_mb_size"),
    (MMD, {"kernel_mul": 1.0}, "kernel_mul"), (MMD, {"kernel_num": 0}, "kernel_num"),
    (CDAN, {"entropy": "yes"}, "entropy"), (CDAN, {"max_dim": 0}, "max_dim"), (MMD, {"replay": 1}, "replay"),
    (FeatureMatching, {"anchor": "moving"}, "anchor"), (DANN, {"target": "somewhere"}, "target"),
    (FeatureAugmentation, {"model": MLP((3, 8, 8), 2), "n_domains": 1}, "n_domains"),
])
def test_bad_arguments_name_the_argument(cls, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        cls(**kwargs)


def test_state_round_trips_with_weights_only(bm, tmp_path):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    dann = CDAN()
    _strategy(model, [dann]).train(bm.train_stream[0])
    torch.save(dann.state_dict(), tmp_path / "p.pt")
    fresh = CDAN()
    fresh.load_state_dict(torch.load(tmp_path / "p.pt", weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(fresh.head.parameters(), dann.head.parameters()))
    assert torch.equal(fresh.rng_state, dann.rng_state)


def test_cnn1d_gap_pools_features_and_its_batchnorm_sees_the_target_batches():
    from kta_plugins.nn import make_model
    from kta_plugins.nn.models import CNN1dGAP
    from scenarios.streams import domain_incremental

    net = make_model("cnn1d-gap", (1, 40), 10)
    assert isinstance(net, CNN1dGAP) and net(torch.randn(3, 1, 40)).shape == (3, 10)
    assert net.features(torch.randn(3, 1, 40)).shape == (3, 32) == (3, net.feature_dim)
    with pytest.raises(ValueError, match="input_shape"):
        CNN1dGAP((1, 8, 8), 10)
    g = torch.Generator().manual_seed(0)
    src = TensorClassificationDataset(torch.randn(64, 1, 40, generator=g), torch.randint(0, 3, (64,), generator=g))
    stream = domain_incremental((src, src), [Identity()])
    target = torch.randn(64, 1, 40, generator=g) + 5.0            # a shifted target domain

    def bn_mean(plugins):
        torch.manual_seed(0)
        model = CNN1dGAP((1, 40), 3, channels=8)
        _strategy(model, plugins).train(stream.train_stream[0])
        return model.features[1].running_mean.clone()

    # weight 0: no alignment gradient, yet the target forward pass moves BatchNorm's running statistics
    # (the "no align (BN)" control of examples/domain_adaptation.py)
    assert not torch.allclose(bn_mean([]), bn_mean([CORAL(target=target, weight=0.0)]))
