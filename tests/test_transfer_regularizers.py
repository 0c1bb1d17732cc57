"""L2-SP and KL anchoring: the added loss equals a hand computation; training runs on a stream."""
import pytest
import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from kta_plugins.nn import MLP
from kta_plugins.transfer import L2SP, KLAnchor, kl_anchor_loss
from scenarios import class_incremental
from strategies import Naive


@pytest.fixture(scope="module")
def split():
    return class_incremental("digits", n_experiences=2, seed=0)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return MLP((1, 8, 8), 10, hidden=(16,))


class Recorder(SupervisedPlugin):
    """Runs after the plugin under test: the loss, the criterion's CE and the minibatch."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def before_backward(self, strategy, **kwargs):
        self.rows.append((strategy.loss.detach().clone(), strategy._criterion(strategy.mb_output, strategy.mb_y).detach(),
                          strategy.mb_x.clone(), strategy.mb_y.clone(), strategy.mb_output.detach().clone(),
                          {k: v.detach().clone() for k, v in strategy.model.named_parameters()}))


def test_l2sp_penalty_equals_hand_computation_on_fixed_tensors():
    model = nn.Sequential()
    model.add_module("features", nn.Linear(2, 2, bias=False))
    model.add_module("classifier", nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model.features.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model.classifier.weight.copy_(torch.tensor([[1.0, -2.0]]))

    class S:  # the strategy attributes the hook reads
        pass
    s = S()
    s.model = model
    reg = L2SP(alpha=0.5, beta=0.2, head=["classifier"])
    reg.before_training_exp(s)
    with torch.no_grad():
        model.features.weight.copy_(torch.tensor([[2.0, 2.0], [3.0, 1.0]]))  # moved by (1, 0, 0, -3)
    # alpha/2 * (1 + 9) + beta/2 * (1 + 4) = 0.25 * 10 + 0.1 * 5 = 3.0
    assert reg.penalty(model).item() == pytest.approx(3.0)
    # gradient points back to the anchor: alpha * (w - w0)
    reg.penalty(model).backward()
    assert torch.allclose(model.features.weight.grad, torch.tensor([[0.5, 0.0], [0.0, -1.5]]))
    assert torch.allclose(model.classifier.weight.grad, 0.2 * torch.tensor([[1.0, -2.0]]))


def test_l2sp_in_training_adds_the_penalty(split):
    model = _mlp()
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    rec = Recorder()
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False,
              plugins=[L2SP(alpha=0.3, beta=0.1, head=["classifier"]), rec])
    s.train(split.train_stream[0])
    for loss, ce, _, _, _, params in rec.rows[:5]:
        hand = 0.15 * sum(((params[k] - start[k]) ** 2).sum() for k in ("features.1.weight", "features.1.bias")) \
            + 0.05 * sum((params[k] ** 2).sum() for k in ("classifier.weight", "classifier.bias"))
        assert loss.item() == pytest.approx((ce + hand).item(), rel=1e-5)
    assert rec.rows[0][0].item() > rec.rows[0][1].item()  # nonzero head term at the first step


def test_l2sp_anchor_modes(split):
    model = _mlp()
    p1 = L2SP(alpha=0.1, anchor="pretrained")
    p2 = L2SP(alpha=0.1, anchor="experience")
    start = model.features[1].weight.detach().clone()
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False, plugins=[p1, p2])
    s.train(split.train_stream[0])
    after0 = model.features[1].weight.detach().clone()
    s.train(split.train_stream[1])
    assert torch.equal(p1.anchor_weights["features.1.weight"], start)
    assert torch.equal(p2.anchor_weights["features.1.weight"], after0)
    state = p1.state_dict()
    fresh = L2SP(alpha=0.1)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.anchor_weights["features.1.weight"], start)


def test_l2sp_errors():
    with pytest.raises(ValueError, match="alpha"):
        L2SP(alpha=-1)
    with pytest.raises(ValueError, match="anchor"):
        L2SP(anchor="init")
    s = Naive(model=_mlp(), optimizer=torch.optim.SGD(_mlp().parameters(), lr=0.1), progress=False,
              plugins=[L2SP(head=["fc"])])
    with pytest.raises(ValueError, match="head.*fc"):
        s.train(class_incremental("digits", n_experiences=2, seed=0).train_stream[0])


def test_kl_anchor_loss_hand_computation():
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    src = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    p = torch.softmax(logits, 1)
    q = torch.softmax(src, 1)
    ce = -(torch.log(p[0, 0]) + torch.log(p[1, 2])) / 2
    kl = (q * (q.log() - p.log())).sum(1).mean()
    a = 0.3
    assert kl_anchor_loss(logits, src, y, a).item() == pytest.approx(((1 - a) * ce + a * kl).item(), rel=1e-6)


def test_kl_anchor_in_training_replaces_ce_by_the_mix(split):
    model = _mlp()
    source = _mlp()
    source.load_state_dict(model.state_dict())
    rec = Recorder()
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.2), progress=False,
              plugins=[KLAnchor(a=0.4), rec])
    s.train(split.train_stream[0])
    for loss, ce, x, y, out, _ in rec.rows[:: max(1, len(rec.rows) // 4)]:
        with torch.no_grad():
            src = source(x)
        assert loss.item() == pytest.approx(kl_anchor_loss(out, src, y, 0.4).item(), rel=1e-5)
    assert rec.rows[0][0].item() == pytest.approx(0.6 * rec.rows[0][1].item(), rel=1e-5)  # KL = 0 at start
    # the source copy is frozen and outside the model / optimizer
    plugin = s.plugins[0]
    assert all(not p.requires_grad for p in plugin.source.parameters())
    assert not any(p is q for q in plugin.source.parameters() for g in s.optimizer.param_groups for p in g["params"])


def test_kl_anchor_errors(split):
    with pytest.raises(ValueError, match="a must"):
        KLAnchor(a=1.5)
    with pytest.raises(ValueError, match="temperature"):
        KLAnchor(temperature=0)
    model = _mlp()
    plugin = KLAnchor(a=0.5)
    plugin.source = MLP((1, 8, 8), 5, hidden=(16,))  # a source with another output layer
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False, plugins=[plugin])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="source model outputs"):
        s.train(split.train_stream[0])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # raised before any step


def test_kl_anchor_state_loads_into_a_fresh_plugin(split):
    """A fresh KLAnchor restored from a saved state anchors to the saved source model (rebuilt as
    a frozen copy of the strategy's model at the next experience, then loaded), not to the model
    it is given; the state survives torch.load(weights_only=True) and re-saving before training."""
    import io

    model = _mlp(0)
    plugin = KLAnchor(a=0.5)
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_epochs=1,
              plugins=[plugin], progress=False, seed=0)
    s.train(split.train_stream[0])
    source = {k: v.clone() for k, v in plugin.source.state_dict().items()}
    buf = io.BytesIO()
    torch.save(plugin.state_dict(), buf)
    buf.seek(0)
    fresh = KLAnchor(a=0.5)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    again = fresh.state_dict()  # not rebuilt yet: the loaded weights are still what it saves
    assert all(torch.equal(again["source"]["__module_state__"][k], v) for k, v in source.items())
    other = _mlp(1)  # a different model: the anchor must still be the saved source
    s2 = Naive(model=other, optimizer=torch.optim.SGD(other.parameters(), lr=0.1), train_epochs=1,
               plugins=[fresh], progress=False, seed=0)
    s2.train(split.train_stream[1])
    assert fresh.source is not None and fresh.source is not other
    assert all(torch.equal(fresh.source.state_dict()[k], v) for k, v in source.items())
    assert not any(p.requires_grad for p in fresh.source.parameters())
