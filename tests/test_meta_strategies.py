"""KTA's few-shot / meta-learning strategies (strategies.meta): mechanisms, training, errors."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from scenarios.datasets import glyphs
from scenarios.episodes import few_shot_benchmark
from strategies.meta import (
    ANIL, FOMAML, MAML, METHODS, MatchingNet, MetaSGD, ProtoNet, RelationNet, Siamese, default_backbone, mean_ci95,
    method_settings, run_few_shot,
)
from strategies.meta.matchingnet import cosine_attention
from strategies.meta.protonet import prototypes
from strategies.meta.siamese import sample_pairs

CLASSES = {"maml": MAML, "fomaml": FOMAML, "metasgd": MetaSGD, "anil": ANIL, "protonet": ProtoNet,
           "matchingnet": MatchingNet, "relationnet": RelationNet, "siamese": Siamese}


class Lin(nn.Module):
    """features = identity, classifier = Linear: logits = W x + b."""

    def __init__(self, d=3, n=2):
        super().__init__()
        self.features = nn.Flatten()
        self.classifier = nn.Linear(d, n)
        self.feature_dim = d

    def forward(self, x):
        return self.classifier(self.features(x))


def _opt(m):
    return torch.optim.SGD(m.parameters(), lr=0.1)


def _fixed():
    torch.manual_seed(0)
    net = Lin()
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 2.0], [-2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([0, 1, 1, 0])
    return net, x, y


def _hand_sgd(W, b, x, y, lr):
    """One SGD step on mean cross-entropy, gradients by hand: dL/dz = (softmax(z) - onehot) / n."""
    z = x @ W.T + b
    dz = (torch.softmax(z, 1) - F.one_hot(y, W.shape[0]).float()) / len(y)
    return W - lr * dz.T @ x, b - lr * dz.sum(0)


# ---------------------------------------------------------------- mechanisms
def test_one_maml_inner_step_equals_a_hand_computed_sgd_step():
    net, x, y = _fixed()
    W, b = net.classifier.weight.detach().clone(), net.classifier.bias.detach().clone()
    s = MAML(model=net, optimizer=_opt(net), inner_lr=0.3, adaptation_steps=1, progress=False)
    learner = s.adapt(x, y)
    W1, b1 = _hand_sgd(W, b, x, y, 0.3)
    assert torch.allclose(learner.module.classifier.weight, W1, atol=1e-6)
    assert torch.allclose(learner.module.classifier.bias, b1, atol=1e-6)
    assert torch.equal(net.classifier.weight.detach(), W)  # the meta-parameters are not touched by adapt
    # two steps = the hand step applied twice
    s2 = MAML(model=Lin(), optimizer=_opt(net), inner_lr=0.3, adaptation_steps=2, progress=False)
    s2.model.module.load_state_dict(net.state_dict())
    W2, b2 = _hand_sgd(*_hand_sgd(W, b, x, y, 0.3), x, y, 0.3)
    assert torch.allclose(s2.adapt(x, y).module.classifier.weight, W2, atol=1e-6)


def test_maml_meta_gradient_is_second_order_and_fomaml_first_order():
    net, x, y = _fixed()
    qx, qy = x.flip(0) * 0.5, y.flip(0)
    grads = {}
    for cls in (MAML, FOMAML):
        m = Lin()
        m.load_state_dict(net.state_dict())
        s = cls(model=m, optimizer=_opt(m), inner_lr=0.5, progress=False)
        loss = F.cross_entropy(s.adapt(x, y)(qx), qy)
        grads[cls] = torch.autograd.grad(loss, s.model.module.classifier.weight)[0]
    # first order: the query gradient at the adapted weights (hand-checked with the SGD step)
    W, b = net.classifier.weight.detach(), net.classifier.bias.detach()
    W1, b1 = _hand_sgd(W, b, x, y, 0.5)
    dz = (torch.softmax(qx @ W1.T + b1, 1) - F.one_hot(qy, 2).float()) / len(qy)
    assert torch.allclose(grads[FOMAML], dz.T @ qx, atol=1e-6)
    # second order differs by the Hessian term
    W_ = W.clone().requires_grad_(True)
    b_ = b.clone().requires_grad_(True)
    Wa, ba = _hand_sgd(W_, b_, x, y, 0.5)
    exact = torch.autograd.grad(F.cross_entropy(qx @ Wa.T + ba, qy), W_)[0]
    assert torch.allclose(grads[MAML], exact, atol=1e-6)
    assert not torch.allclose(grads[MAML], grads[FOMAML], atol=1e-4)


def test_metasgd_inner_step_uses_the_learned_per_parameter_rates():
    net, x, y = _fixed()
    W, b = net.classifier.weight.detach().clone(), net.classifier.bias.detach().clone()
    s = MetaSGD(model=net, optimizer=_opt(net), inner_lr=0.2, progress=False)
    rates = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    with torch.no_grad():
        s.model.lrs[0].copy_(rates)
    learner = s.adapt(x, y)
    z = x @ W.T + b
    dz = (torch.softmax(z, 1) - F.one_hot(y, 2).float()) / len(y)
    assert torch.allclose(learner.module.classifier.weight, W - rates * (dz.T @ x), atol=1e-6)
    assert torch.allclose(learner.module.classifier.bias, b - 0.2 * dz.sum(0), atol=1e-6)


def test_anil_adapts_only_the_head():
    torch.manual_seed(0)
    net = nn.Module()
    net.features = nn.Linear(3, 3)
    net.classifier = nn.Linear(3, 2)
    net.forward = lambda x: net.classifier(net.features(x))
    _, x, y = _fixed()
    feats = net.features(x).detach()
    W, b = net.classifier.weight.detach().clone(), net.classifier.bias.detach().clone()
    body = net.features.weight.detach().clone()
    s = ANIL(model=net, optimizer=_opt(net), inner_lr=0.3, adaptation_steps=1, progress=False)
    learner = s.adapt(x, y)
    W1, b1 = _hand_sgd(W, b, feats, y, 0.3)
    assert torch.allclose(learner.module.weight, W1, atol=1e-6) and torch.allclose(learner.module.bias, b1, atol=1e-6)
    assert torch.equal(net.features.weight.detach(), body)


def test_a_prototype_is_the_mean_support_embedding():
    net, x, y = _fixed()
    s = ProtoNet(model=net, optimizer=_opt(net), progress=False)
    protos = s.adapt(x, y)  # embedding = net.features = identity
    assert torch.allclose(protos[0], (x[0] + x[3]) / 2) and torch.allclose(protos[1], (x[1] + x[2]) / 2)
    q = torch.tensor([[0.0, 0.0, 0.0]])
    expected = -torch.stack([((q - protos[k]) ** 2).sum() for k in range(2)])
    assert torch.allclose(s.predict(protos, q)[0], expected, atol=1e-5)
    assert torch.allclose(prototypes(torch.eye(3), torch.tensor([0, 0, 1])), torch.tensor([[.5, .5, 0], [0, 0, 1.]]))


def test_matching_net_cosine_attention_by_hand():
    q = torch.tensor([[1.0, 0.0]])
    sup = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    a = cosine_attention(q, sup, scale=2.0)
    cos = torch.tensor([1.0, 0.0, -1.0])
    assert torch.allclose(a[0], torch.softmax(2.0 * cos, 0))
    net = Lin(d=2)
    s = MatchingNet(model=net, optimizer=_opt(net), scale=2.0, progress=False)
    state = s.adapt(sup, torch.tensor([0, 1, 0]))
    p = s.predict(state, q).exp()[0]  # P(y | x, S) = sum_i a_i y_i
    assert torch.allclose(p, torch.stack([a[0, 0] + a[0, 2], a[0, 1]]), atol=1e-6)


def test_relation_net_scores_every_query_class_pair_from_class_sums():
    net, x, y = _fixed()
    s = RelationNet(model=net, optimizer=_opt(net), hidden=4, progress=False)
    s.model.eval()  # g has BatchNorm: per-pair results with the running statistics
    sums = s.adapt(x, y)
    assert torch.allclose(sums[0], x[0] + x[3])  # e_k = sum of the support embeddings of class k
    logits = s.predict(sums, x[:3])
    assert logits.shape == (3, 2)
    pair = torch.cat([x[1], sums[0]])[None]
    assert torch.allclose(logits[1, 0], s.model.relation(pair)[0, 0])
    assert any(n.startswith("relation.") for n, _ in s.model.named_parameters())  # g is in strategy.model


def test_the_siamese_probability_is_symmetric_and_pairs_are_balanced():
    torch.manual_seed(0)
    net = default_backbone((1, 28, 28), 5)
    s = Siamese(model=net, optimizer=_opt(net), progress=False)
    a, b = torch.rand(6, 1, 28, 28), torch.rand(6, 1, 28, 28)
    pab, pba = s.model.probability(a, b), s.model.probability(b, a)
    assert torch.allclose(pab, pba) and ((pab > 0) & (pab < 1)).all()
    e1, e2 = s.model.embedding(a[:1]), s.model.embedding(b[:1])
    expected = torch.sigmoid((s.model.head.weight[0] * (e1 - e2).abs()[0]).sum() + s.model.head.bias[0])
    assert torch.allclose(pab[0], expected, atol=1e-6)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    i, j, same = sample_pairs(labels, 10, torch.Generator().manual_seed(0))
    assert same.sum() == 10 and len(same) == 20
    assert torch.equal((labels[i] == labels[j]).float(), same) and (i != j).all()


def test_mean_ci95_by_hand():
    acc = [0.5, 0.7, 0.6, 0.8]
    m, ci = mean_ci95(acc)
    sd = math.sqrt(sum((a - 0.65) ** 2 for a in acc) / 3)
    assert m == pytest.approx(0.65) and ci == pytest.approx(1.96 * sd / 2)


# ---------------------------------------------------------------- training and evaluation
@pytest.fixture(scope="module")
def tiny_bm():
    bg, ev = glyphs(n_classes=30, samples_per_class=20, seed=1)
    return few_shot_benchmark(bg, ev, n_ways=3, k_shots=1, q_queries=4, n_experiences=2, seed=0)


@pytest.mark.parametrize("name", METHODS)
def test_each_method_meta_trains_and_evaluates_on_episodes(tiny_bm, name):
    from strategies.registry import STRATEGIES, load_all
    from strategies.results import train_and_evaluate

    load_all()
    assert STRATEGIES.get(name) is CLASSES[name]
    torch.manual_seed(0)
    net = default_backbone(tiny_bm.input_shape, tiny_bm.n_classes)
    before = [p.detach().clone() for p in net.parameters()]
    s = CLASSES[name](model=net, optimizer=torch.optim.Adam(net.parameters(), 1e-3), iterations_per_epoch=3,
                      meta_batch_size=2, eval_episodes=5, progress=False, seed=0)
    A = train_and_evaluate(s, tiny_bm)
    assert A.shape == (2, 3) and ((A >= 0) & (A <= 1)).all()
    r = s.episode_results[tiny_bm.unseen_index]
    assert r["episodes"] == 5 and (r["n_ways"], r["k_shots"], r["q_queries"]) == (3, 1, 4)
    assert r["accuracy"] == pytest.approx(A[-1, -1])
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))


def test_episodic_evaluation_is_deterministic_and_trains_on_a_class_incremental_stream():
    from scenarios import class_incremental

    bm = class_incremental("digits", n_experiences=2, seed=0)  # episodes from any experience
    net = default_backbone((1, 8, 8), 3)
    s = ProtoNet(model=net, optimizer=torch.optim.Adam(net.parameters(), 1e-3), n_ways=3, k_shots=2, q_queries=5,
                 iterations_per_epoch=20, eval_episodes=30, progress=False)
    s.train(bm.train_stream[0])
    r1 = s.evaluate_episodes(bm.test_stream[1])
    r2 = s.evaluate_episodes(bm.test_stream[1])
    assert r1 == r2 and r1["accuracy"] > 1 / 3  # unseen digits, above chance


def test_protonet_learns_glyphs_far_above_chance():
    r = run_few_shot("glyphs-5way-5shot:n_classes=120", "protonet", seed=0, quick=True)
    assert r["accuracy"] > 0.6 and r["episodes"] == 100 and 0 < r["ci95"] < 0.1
    assert (r["n_ways"], r["k_shots"]) == (5, 5)


def test_the_command_line_builds_meta_strategies(tiny_bm):
    from strategies.cli import build_run

    bm, strat = build_run("glyphs-5way-1shot:n_classes=40", "maml:inner_lr=0.2,iterations_per_epoch=2", seed=0,
                          progress=False)
    assert isinstance(strat, MAML) and strat.inner_lr == 0.2 and bm.n_classes == 5


# ---------------------------------------------------------------- bad input
def test_bad_arguments_name_them():
    net = Lin()
    with pytest.raises(ValueError, match="inner_lr"):
        MAML(model=net, optimizer=_opt(net), inner_lr=-1.0)
    with pytest.raises(ValueError, match="adaptation_steps"):
        MAML(model=net, optimizer=_opt(net), adaptation_steps=0)
    with pytest.raises(ValueError, match="n_ways"):
        ProtoNet(model=net, optimizer=_opt(net), n_ways=1)
    with pytest.raises(ValueError, match="meta_batch_size"):
        ProtoNet(model=net, optimizer=_opt(net), meta_batch_size=0)
    with pytest.raises(ValueError, match="scale"):
        MatchingNet(model=net, optimizer=_opt(net), scale=0.0)
    with pytest.raises(ValueError, match="features"):
        ProtoNet(model=net, optimizer=_opt(net), features="nope")
    with pytest.raises(ValueError, match="pairs_per_episode"):
        Siamese(model=net, optimizer=_opt(net), pairs_per_episode=0)
    with pytest.raises(TypeError, match="model"):
        ProtoNet(model="net", optimizer=_opt(net))
    with pytest.raises(ValueError, match="strategy_name"):
        run_few_shot("glyphs-5way-1shot", "nope")


def test_an_experience_with_too_few_classes_or_samples_is_a_clear_error_before_training(tiny_bm):
    net = default_backbone(tiny_bm.input_shape, 9)
    before = [p.detach().clone() for p in net.parameters()]
    s = ProtoNet(model=net, optimizer=_opt(net), n_ways=9, progress=False)  # experiences have 9 classes: fine
    with pytest.raises(ValueError, match="n_ways=10"):
        ProtoNet(model=net, optimizer=_opt(net), n_ways=10, progress=False).train(tiny_bm.train_stream[0])
    with pytest.raises(ValueError, match=r"k_shots \+ q_queries"):
        ProtoNet(model=net, optimizer=_opt(net), k_shots=10, q_queries=11, progress=False).train(tiny_bm.train_stream[0])
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))
    assert s.n_ways == 9


def test_mnist1d_maml_has_its_own_recipe_and_other_settings_are_unchanged():
    glyph = method_settings("maml")
    mnist = method_settings("maml", scenario_name="mnist1d-4way-1shot")
    assert (mnist["inner_lr"], mnist["adaptation_steps"], mnist["test_adaptation_steps"]) == (0.1, 5, 10)
    assert mnist["iterations_per_epoch"] == 1000 and mnist["meta_batch_size"] == 4
    assert (glyph["inner_lr"], glyph["adaptation_steps"], glyph["iterations_per_epoch"]) == (0.4, 1, 250)
    assert method_settings("maml", scenario_name="glyphs-5way-1shot") == glyph
    assert method_settings("maml", scenario_name="mnist1d-4way-1shot:q_queries=5") == mnist
    assert method_settings("protonet", scenario_name="mnist1d-4way-1shot") == method_settings("protonet")
    quick = method_settings("maml", quick=True, scenario_name="mnist1d-4way-1shot")
    assert quick["iterations_per_epoch"] == method_settings("maml", quick=True)["iterations_per_epoch"] == 10
    with pytest.raises(ValueError, match="strategy_name"):
        method_settings("nope", scenario_name="mnist1d-4way-1shot")
