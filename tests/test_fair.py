"""Fair / invariant representations: the attribute adversary (gradient reversal), the probe, fair-digits."""
import pytest
import numpy as np
import torch
from torch import nn

from kta_plugins.adapt import FairAdversary, adversary_loss, attribute_probe
from kta_plugins.adapt.fair import adversary_head
from kta_plugins.nn import MLP
from kta_plugins.nn.grl import ganin_lambda
from scenarios.attributes import AttributeDataset, attribute_scenario, correlated_attribute, fair_digits
from scenarios.datasets import digits
from scenarios.registry import SCENARIOS
from scenarios.streams import class_incremental
from strategies import Naive


def _strategy(model, plugins, epochs=1, lr=0.05, momentum=0.0):
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum),
                 train_epochs=epochs, train_mb_size=32, plugins=plugins, progress=False, seed=0)


@pytest.fixture(scope="module")
def bm():
    return fair_digits(seed=0)


# ------------------------------------------------------------------ the mechanism
def test_reversal_flips_the_feature_gradient_and_leaves_the_adversary_gradient_plain():
    torch.manual_seed(0)
    head = adversary_head(6, 3, hidden=5, seed=1)
    h = torch.randn(8, 6, requires_grad=True)
    a = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    y1h = nn.functional.one_hot(torch.arange(8) % 2, 2).float().requires_grad_(True)
    head_c = adversary_head(8, 3, hidden=5, seed=1)

    # plain cross-entropy, no reversal: the reference gradients
    plain = nn.functional.cross_entropy(head(h), a)
    g_h, *g_head = torch.autograd.grad(plain, [h, *head.parameters()])
    loss, logits = adversary_loss(head, h, a, 0.5)
    assert torch.allclose(loss, plain) and logits.shape == (8, 3)   # identity forward
    r_h, *r_head = torch.autograd.grad(loss, [h, *head.parameters()])
    assert torch.allclose(r_h, -0.5 * g_h)                          # features: -lambda x the gradient
    assert all(torch.allclose(a_, b_) for a_, b_ in zip(r_head, g_head))  # adversary: the plain gradient
    # conditional adversary: the label inputs get no gradient, the features still the reversed one
    loss_c, _ = adversary_loss(head_c, h, a, 2.0, condition=y1h.detach())
    (c_h,) = torch.autograd.grad(loss_c, [h])
    plain_c = nn.functional.cross_entropy(head_c(torch.cat([h, y1h.detach()], 1)), a)
    (p_h,) = torch.autograd.grad(plain_c, [h])
    assert torch.allclose(c_h, -2.0 * p_h)


def test_one_step_moves_features_to_raise_the_adversary_loss(bm):
    """After one SGD step on the reversal term alone, the adversary does worse on the same batch with the
    head fixed (the features moved up its loss), while its own step alone lowers it."""
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(32,))
    ds = bm.train_set
    x, a = ds.x[:64], ds.a[:64]
    head = adversary_head(32, 2, hidden=16, seed=3)
    loss0, _ = adversary_loss(head, model.features(x), a, 1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.zero_grad()
    adversary_loss(head, model.features(x), a, 1.0)[0].backward()
    opt.step()
    with torch.no_grad():
        loss1, _ = adversary_loss(head, model.features(x), a, 1.0)
    assert float(loss1) > float(loss0)


# ------------------------------------------------------------------ the scenario
def test_fair_digits_correlates_the_attribute_with_the_label_in_training_only(bm):
    assert SCENARIOS.get("fair-digits") is fair_digits
    group = lambda ds: (ds.y >= 5).long()  # noqa: E731
    agree = lambda ds: float((ds.a == group(ds)).float().mean())  # noqa: E731
    assert 0.86 < agree(bm.train_set) < 0.94
    assert 0.86 < agree(bm.test_sets[0]) < 0.94
    assert 0.4 < agree(bm.test_sets[1]) < 0.6
    # the background: a = 1 images are brighter by `level` (0.3) on average, up to the jitter
    d = bm.train_set
    gap = d.x[d.a == 1].mean() - d.x[d.a == 0].mean()
    assert 0.25 < float(gap) < 0.35
    # a sample is (x, y, a, task label): Avalanche's mb_task_id (the last field) is still the task label
    x, y, a, t = bm.train_stream[0].dataset[0]
    assert t == 0 and int(a) in (0, 1)
    assert bm.n_attributes == 2 and bm.attribute_name == "background"


def test_attribute_dataset_checks_its_attribute():
    x, y = torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="a must"):
        AttributeDataset(x, y, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="a must be >= 0"):
        AttributeDataset(x, y, torch.tensor([0, -1, 0, 1]))
    with pytest.raises(ValueError, match="correlation"):
        correlated_attribute(y, 1.5)
    with pytest.raises(TypeError, match="AttributeDataset"):
        attribute_scenario(AttributeDataset(x, y, y), [digits()[1]])


# ------------------------------------------------------------------ the plugin end to end
def test_adversary_is_trained_outside_the_model_reads_the_attribute_field_and_follows_the_schedule(bm):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    fair = FairAdversary(lambda_max=0.5, head_hidden=8)
    s = _strategy(model, [fair], epochs=2)
    seen = []

    from avalanche.core import SupervisedPlugin

    class Spy(SupervisedPlugin):
        def after_backward(self, strategy, **kw):
            seen.append((fair.step, fair.last_lambda, strategy.mbatch[2].clone(), strategy.mb_task_id.clone()))
            if len(seen) == 1:
                Spy.head0 = [p.detach().clone() for p in fair.head.parameters()]

    s.plugins.append(Spy())
    s.train(bm.train_stream[0])
    model_ids = {id(p) for p in model.parameters()}
    opt_ids = {id(p) for g in s.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in model_ids for p in fair.head.parameters())
    assert all(id(p) in opt_ids for p in fair.head.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(Spy.head0, fair.head.parameters()))  # the adversary learned
    assert fair.n_attributes == 2 and fair.head[-1].out_features == 2
    assert fair.total_steps == 2 * -(-len(bm.train_set) // 32)
    for step, lam, a, t in seen:
        assert lam == pytest.approx(0.5 * ganin_lambda(step / fair.total_steps))
        assert set(a.tolist()) <= {0, 1} and set(t.tolist()) == {0}
    assert seen[0][1] == 0.0 and seen[-1][1] > 0.45


def test_avalanche_loader_path_carries_the_attribute_too(bm):
    """With KTA's fast path off, Avalanche's own loader collates the same [x, y, a, t] minibatches."""
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    fair = FairAdversary(head_hidden=0, conditional=True)   # Zhang et al.'s adversary: features + one-hot label
    seen = []

    from avalanche.core import SupervisedPlugin

    class Spy(SupervisedPlugin):
        def before_backward(self, strategy, **kw):
            seen.append((len(strategy.mbatch), strategy.mbatch[2].dtype, int(strategy.mb_task_id.max())))

    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=256,
              plugins=[Spy(), fair], progress=False, seed=0, fast_data=False)
    s.train(bm.train_stream[0])
    assert seen and all(n == 4 and dt == torch.long and t == 0 for n, dt, t in seen)
    assert fair.n_attributes == 2 and fair.last_loss == fair.last_loss
    assert fair.head[0].in_features == 16 + 10


def _train_and_probe(bm, plugins, epochs=15, seed=0):
    torch.manual_seed(seed)
    model = MLP((1, 8, 8), 10, hidden=(64,))
    s = _strategy(model, plugins, epochs=epochs, lr=0.05, momentum=0.9)
    s.train(bm.train_stream[0])
    probe = attribute_probe(model, "features", bm.test_sets[1], seed=0)
    with torch.no_grad():
        test = bm.test_sets[1]
        task = float((model(test.x).argmax(1) == test.y).float().mean())
    return probe, task


def test_reversal_brings_the_probe_towards_chance(bm):
    """Same model, data, seed and epochs; with the adversary (constant lambda=1, weight 1.25) a fresh linear
    probe recovers the background from the features much less well. One measured, deterministic point:
    the adversarial game is unstable (README: larger weights can collapse the features)."""
    off, task_off = _train_and_probe(bm, [])
    on, task_on = _train_and_probe(bm, [FairAdversary(weight=1.25, schedule=False)])
    assert off["chance"] == on["chance"] and 0.45 < on["chance"] < 0.55
    assert off["accuracy"] > 0.95                       # without the adversary the background is in the features
    assert on["accuracy"] < off["accuracy"] - 0.15      # with it, much less of it
    assert on["accuracy"] - on["chance"] < 0.6 * (off["accuracy"] - off["chance"])
    assert task_on > 0.85                               # while the task is still solved (off: about 0.94)


def test_adversary_steps_are_plain_sgd_steps_of_the_adversary_alone():
    """After the joint update, ``adversary_steps`` SGD steps of the head on that minibatch's detached
    features: equal to a hand computation; the model is not touched by them."""
    torch.manual_seed(0)
    fair = FairAdversary(head_hidden=4, adversary_steps=3, adversary_lr=0.5)
    fair.head = adversary_head(6, 2, hidden=4, seed=1)
    h, a = torch.randn(8, 6), torch.tensor([0, 1] * 4)
    ref = adversary_head(6, 2, hidden=4, seed=1)
    for _ in range(3):
        ref.zero_grad()
        torch.nn.functional.cross_entropy(ref(h), a).backward()
        with torch.no_grad():
            for p in ref.parameters():
                p -= 0.5 * p.grad
    fair._extra = (h, None, a)
    fair.after_update(strategy=None)
    assert fair._extra is None
    for p, q in zip(fair.head.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    with pytest.raises(ValueError, match="adversary_steps"):
        FairAdversary(adversary_steps=-1)


def test_adversary_steps_hide_the_attribute_from_a_later_probe(bm):
    """Without extra steps the encoder fools the one-step adversary while the background stays linearly
    readable; with 5 extra adversary steps per update (lr 0.1) a fresh probe falls most of the way to chance
    and the task is kept. Means over 3 seeds (the adversarial game is unstable: one seed is not a claim)."""
    off, on, task = [], [], []
    for seed in range(3):
        o, _ = _train_and_probe(bm, [FairAdversary(weight=1.0, schedule=False, seed=seed)], epochs=30, seed=seed)
        n, t = _train_and_probe(bm, [FairAdversary(weight=1.0, schedule=False, adversary_steps=5, adversary_lr=0.1,
                                                   seed=seed)], epochs=30, seed=seed)
        off.append(o["accuracy"] - o["chance"])
        on.append(n["accuracy"] - n["chance"])
        task.append(t)
    assert np.mean(off) > 0.15                    # measured: 0.21 above chance
    assert np.mean(on) < 0.5 * np.mean(off)       # measured: 0.07 above chance
    assert np.mean(task) > 0.8                    # measured: 0.85 (0.72 / 0.93 / 0.89)


def test_attribute_function_of_the_input():
    """``attribute=fn`` on a stream without an attribute field: fn(x) is the attribute."""
    train, test = digits(seed=0)
    bm = class_incremental((train, test), n_experiences=1, class_order=list(range(10)))
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16,))
    calls = []

    def bright(x):
        calls.append(len(x))
        return (x.flatten(1).mean(1) > 0.3).long()

    fair = FairAdversary(attribute=bright, head_hidden=0)
    _strategy(model, [fair]).train(bm.train_stream[0])
    assert calls[0] == len(train) and calls[1] == 32      # the experience once (checks), then each minibatch
    assert 0.0 <= fair.last_accuracy <= 1.0 and fair.last_loss == fair.last_loss


# ------------------------------------------------------------------ bad input, before the first step
def _no_step(model, plugin, exp, match):
    before = [p.detach().clone() for p in model.parameters()]
    s = _strategy(model, [plugin])
    with pytest.raises(ValueError, match=match):
        s.train(exp)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bad_input_fails_before_the_first_step(bm):
    train, test = digits(seed=0)
    plain = class_incremental((train, test), n_experiences=1, class_order=list(range(10))).train_stream[0]
    model = MLP((1, 8, 8), 10, hidden=(16,))
    _no_step(model, FairAdversary(), plain, r"FairAdversary: no attribute: .*attribute=")
    _no_step(model, FairAdversary(layer="backbone"), bm.train_stream[0], r"layer='backbone' is not a module")
    _no_step(model, FairAdversary(attribute=lambda x: x.mean(1)), plain, r"attribute\(x\) must give one")
    _no_step(model, FairAdversary(attribute=lambda x: x.flatten(1).mean(1)), plain, r"attribute\(x\) must hold integer")
    _no_step(model, FairAdversary(attribute=lambda x: torch.full((len(x),), 3), n_attributes=2), plain,
             r"attribute value 3 is out of range: n_attributes=2")
    with pytest.raises(TypeError, match="attribute"):
        FairAdversary(attribute="background")
    with pytest.raises(ValueError, match="n_attributes"):
        FairAdversary(n_attributes=1)


# ------------------------------------------------------------------ the probe
def test_probe_reads_an_attribute_that_is_in_the_features_and_not_one_that_is_not():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    a = (x[:, 0] > 0).long()
    noise = torch.randint(0, 2, (400,), generator=g)
    ident = nn.Sequential()
    ident.add_module("features", nn.Identity())
    r = attribute_probe(ident, "features", (x, a, a))               # field 2 of the data
    assert r["accuracy"] > 0.95 and r["n_train"] + r["n_test"] == 400 and r["n_features"] == 5
    r = attribute_probe(ident, "features", x, noise)                 # a tensor of values
    assert abs(r["accuracy"] - r["chance"]) < 0.1
    r = attribute_probe(ident, "features", x, lambda t: (t[:, 1] > 0).long(), hidden=8)   # a function, MLP probe
    assert r["accuracy"] > 0.9
    with pytest.raises(ValueError, match="attribute"):
        attribute_probe(ident, "features", x)
    with pytest.raises(ValueError, match="layer='nope'"):
        attribute_probe(ident, "nope", x, a)
    with pytest.raises(ValueError, match="test_fraction"):
        attribute_probe(ident, "features", x, a, test_fraction=1.0)


def test_probe_leaves_the_model_as_it_was(bm):
    model = MLP((1, 8, 8), 10, hidden=(16,))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attribute_probe(model, "features", bm.test_sets[1])
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
