"""Domain bridges (scenarios.bridges) and gradual self-training (kta_plugins.adapt.self_training)."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from kta_plugins.adapt.self_training import SelfTraining, pseudo_label
from kta_plugins.adapt.target import UNLABELED
from scenarios.bridges import Interpolation, bridge, bridge_shift, bridge_strengths, stratified_chunks
from scenarios.datasets import TensorClassificationDataset, digits
from scenarios.domains import GaussianBlur, Inversion
from scenarios.registry import SCENARIOS, RegistryError
from scenarios.shifts import GaussianNoise, Identity, Rotation


def _fields(exp):
    ds = exp.dataset
    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor([int(ds[i][1]) for i in range(len(ds))])


@pytest.fixture(scope="module")
def small():
    """A small (train, test) pair of digits: 200 / 100 samples, all classes."""
    train, test = digits(seed=0)
    return (TensorClassificationDataset(train.x[:200], train.y[:200]),
            TensorClassificationDataset(test.x[:100], test.y[:100]))


def test_strengths_are_k_over_n_minus_1():
    assert bridge_strengths(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert bridge_strengths(2) == [0.0, 1.0]
    assert bridge_strengths(4) == [0.0, 1 / 3, 2 / 3, 1.0]
    assert bridge_strengths(4, jump=True) == [0.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="n_experiences"):
        bridge_strengths(1)


def test_family_shifts_scale_with_strength():
    assert isinstance(bridge_shift("rotation", 0.0), Identity)
    r = bridge_shift("rotation", 0.5, max_strength=60.0)
    assert isinstance(r, Rotation) and r.degrees == 30.0
    b = bridge_shift("blur", 0.25)  # default max sigma 2.0
    assert isinstance(b, GaussianBlur) and b.sigma == 0.5
    n = bridge_shift("noise", 1.0, max_strength=0.4, seed=3)
    assert isinstance(n, GaussianNoise) and n.std == 0.4 and n.seed == 3
    with pytest.raises(ValueError, match="shift"):
        bridge_shift("shear", 0.5)
    with pytest.raises(ValueError, match="max_strength"):
        bridge_shift("rotation", 0.5, max_strength=-1.0)
    with pytest.raises(ValueError, match="strength"):
        bridge_shift("rotation", 1.5)


def test_interpolation_is_the_segment_from_source_to_target():
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(Interpolation(Inversion(), 0.0)(x), x)
    assert torch.equal(Interpolation(Inversion(), 1.0)(x), 1 - x)
    # (1 - s) x + s (1 - x) at s = 0.25: 0.75 x + 0.25 - 0.25 x = 0.5 x + 0.25
    assert torch.allclose(Interpolation(Inversion(), 0.25)(x), 0.5 * x + 0.25)
    assert torch.allclose(Interpolation(Inversion(), 0.5)(x), torch.full_like(x, 0.5))


def test_chunks_are_disjoint_stratified_and_cover_everything():
    y = np.repeat(np.arange(4), 10)
    chunks = stratified_chunks(y, 5, seed=0)
    allidx = np.concatenate(chunks)
    assert sorted(allidx.tolist()) == list(range(40))
    for c in chunks:
        assert np.bincount(y[c], minlength=4).tolist() == [2, 2, 2, 2]


def test_bridge_domains_are_exactly_the_stated_shifts(small):
    train, test = small
    bm = bridge(small, "rotation", n_experiences=5, max_strength=80.0, labels="source", seed=1)
    assert bm.strengths == [0.0, 0.25, 0.5, 0.75, 1.0] == bm.test_strengths
    assert len(bm.train_stream) == len(bm.test_stream) == 5
    chunks = stratified_chunks(train.y.numpy(), 5, seed=1)
    for k, exp in enumerate(bm.train_stream):
        x, y = _fields(exp)
        idx = torch.as_tensor(chunks[k])
        expected = train.x[idx] if k == 0 else Rotation(20.0 * k)(train.x[idx])
        assert torch.equal(x, expected), k
        # labels only on the source
        assert torch.equal(y, train.y[idx]) if k == 0 else bool((y == UNLABELED).all())
    # first = source, last = target (train and test)
    assert torch.equal(_fields(bm.test_stream[0])[0], test.x)
    assert torch.equal(_fields(bm.test_stream[-1])[0], Rotation(80.0)(test.x))
    assert torch.equal(_fields(bm.test_stream[-1])[1], test.y)
    assert bm.target_shift.degrees == 80.0


def test_jump_has_the_same_budget_and_test_stream(small):
    train, _ = small
    b = bridge(small, "blur", n_experiences=4, labels="all", seed=0)
    j = bridge(small, "blur", n_experiences=4, labels="all", jump=True, seed=0)
    assert j.strengths == [0.0, 1.0, 1.0, 1.0] and j.kind == "domain-jump"
    assert [len(e.dataset) for e in j.train_stream] == [len(e.dataset) for e in b.train_stream]
    for eb, ej in zip(b.test_stream, j.test_stream):
        assert torch.equal(_fields(eb)[0], _fields(ej)[0])
    idx = torch.as_tensor(j.train_indices[2])
    assert torch.equal(_fields(j.train_stream[2])[0], GaussianBlur(2.0)(train.x[idx]))
    assert torch.equal(_fields(j.train_stream[2])[1], train.y[idx])


def test_bridge_is_seeded(small):
    a = bridge(small, "noise", n_experiences=3, seed=4)
    b = bridge(small, "noise", n_experiences=3, seed=4)
    c = bridge(small, "noise", n_experiences=3, seed=5)
    for ea, eb in zip(a.train_stream, b.train_stream):
        assert torch.equal(_fields(ea)[0], _fields(eb)[0])
    assert not torch.equal(_fields(a.train_stream[1])[0], _fields(c.train_stream[1])[0])


def test_bridge_arguments_are_named(small):
    with pytest.raises(ValueError, match="labels"):
        bridge(small, labels="some")
    with pytest.raises(ValueError, match="n_experiences"):
        bridge(small, n_experiences=1)
    with pytest.raises(ValueError, match="max_strength"):
        bridge(small, Inversion(), max_strength=2.0)


def test_registered_bridge_scenario():
    bm = SCENARIOS.build("bridge-digits:n_experiences=3,jump=true", seed=0)
    assert bm.strengths == [0.0, 1.0, 1.0] and bm.test_strengths == [0.0, 0.5, 1.0]
    assert bm.labels == "all" and bm.n_classes == 10
    with pytest.raises(RegistryError, match="labels"):
        SCENARIOS.build("bridge-digits:labels=none", seed=0)


# ---------------------------------------------------------------- self-training
class _Fixed(nn.Module):
    """Logits = x @ W: hand-checkable confidences."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x):
        return x.flatten(1) @ self.w


def test_pseudo_labels_are_the_confident_argmax():
    model = _Fixed(torch.eye(2))
    # softmax confidences: [e^2, 1]/(e^2+1) = 0.881 -> class 0; [0, 0] -> 0.5 (tie: class 0);
    # [0, 1] -> 0.731 class 1; [0, 4] -> 0.982 class 1
    x = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 4.0]])
    t = torch.zeros(4, dtype=torch.long)
    labels, keep = pseudo_label(model, x, t, threshold=0.7)
    assert labels.tolist() == [0, 0, 1, 1] and keep.tolist() == [True, False, True, True]
    labels, keep = pseudo_label(model, x, t, threshold=0.0, fraction=0.5)  # the 2 most confident
    assert keep.tolist() == [True, False, False, True]
    assert model.training  # mode restored


def test_self_training_replaces_unlabeled_samples_by_confident_pseudo_labels():
    from avalanche.core import SupervisedPlugin

    from scenarios.streams import avalanche_dataset as _av, make_scenario as _scenario
    from strategies import Naive

    x = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 4.0], [3.0, 0.0]])
    y = torch.tensor([UNLABELED, UNLABELED, UNLABELED, UNLABELED, 0])
    bm = _scenario([_av(TensorClassificationDataset(x, y), 0)], [_av(TensorClassificationDataset(x, y.clamp(0)), 0)])
    model = _Fixed(torch.eye(2))
    plugin = SelfTraining(threshold=0.7)
    seen = []

    class Spy(SupervisedPlugin):  # records the dataset the strategy trains on
        def before_training_epoch(self, strategy, **kwargs):
            seen.append([(strategy.adapted_dataset[i][0], int(strategy.adapted_dataset[i][1]))
                         for i in range(len(strategy.adapted_dataset))])

    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0), plugins=[plugin, Spy()],
              progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.train(bm.train_stream[0])
    got = sorted((tuple(a.tolist()), b) for a, b in seen[0])
    # kept: the 3 confident unlabeled samples with their arg-max, the labeled one unchanged; [0, 0] dropped
    assert got == [((0.0, 1.0), 1), ((0.0, 4.0), 1), ((2.0, 0.0), 0), ((3.0, 0.0), 0)]
    assert plugin.history == [{"unlabeled": 4, "kept": 3}]


def test_self_training_arguments_are_named():
    with pytest.raises(ValueError, match="threshold"):
        SelfTraining(threshold=1.0)
    with pytest.raises(ValueError, match="fraction"):
        SelfTraining(fraction=0.0)


def test_tiny_bridge_end_to_end_with_self_training(small):
    from kta_plugins.nn import MLP
    from strategies import Naive
    from strategies.results import train_and_evaluate

    bm = bridge(small, "rotation", n_experiences=3, max_strength=30.0, labels="source", seed=0)
    torch.manual_seed(0)
    model = MLP(bm.input_shape, 10, hidden=(32,))
    plugin = SelfTraining(fraction=0.9)
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), train_epochs=10,
              train_mb_size=16, plugins=[plugin], seed=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        A = train_and_evaluate(s, bm)
    assert A.shape == (3, 3) and np.isfinite(A).all()
    n = [len(e.dataset) for e in bm.train_stream]
    assert plugin.history == [{"unlabeled": 0, "kept": 0}, {"unlabeled": n[1], "kept": int(np.ceil(0.9 * n[1]))},
                              {"unlabeled": n[2], "kept": int(np.ceil(0.9 * n[2]))}]
    assert A[-1, -1] > 0.3  # well above chance (0.1) on the target after two unlabeled steps


def test_kta_run_on_bridge_digits_reports_every_domain():
    from strategies.cli import run

    r = run("bridge-digits:n_experiences=3", "naive", epochs=1, seed=0, log_dir=None, progress=False)
    A = np.array(r["accuracy_matrix"])
    assert A.shape == (3, 3) and np.isfinite(A).all() and not r["joint"]


def test_self_training_keeps_an_experience_unlabeled_when_nothing_is_confident():
    from kta_plugins.adapt.target import MaskedCrossEntropy
    from scenarios.streams import avalanche_dataset as _av, make_scenario as _scenario
    from strategies import Naive

    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.full((2,), UNLABELED)
    bm = _scenario([_av(TensorClassificationDataset(x, y), 0)], [_av(TensorClassificationDataset(x, y.clamp(0)), 0)])
    model = _Fixed(torch.eye(2))  # confidences 0.73 < threshold
    before = model.w.detach().clone()
    plugin = SelfTraining(threshold=0.9)
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5), criterion=MaskedCrossEntropy(),
              plugins=[plugin], progress=False)
    with pytest.warns(UserWarning, match="no unlabeled sample"):
        s.train(bm.train_stream[0])
    assert plugin.history == [{"unlabeled": 2, "kept": 0}]
    assert torch.equal(model.w.detach(), before)  # no label, no loss, no step
