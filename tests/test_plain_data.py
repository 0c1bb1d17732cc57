"""Own tensors in plain ``TensorDataset``s, one-experience (offline) training, and a step budget."""
from __future__ import annotations

import pytest
import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import TensorDataset

from kta_plugins.nn import MLP
from scenarios import class_incremental, offline
from scenarios.registry import SCENARIOS
from scenarios.streams import dataset_targets
from strategies import Naive


def _tensors(n=60, d=5, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.arange(n) % classes


def test_plain_tensor_datasets_make_a_stream():
    x, y = _tensors()
    bm = class_incremental((TensorDataset(x[:40], y[:40]), TensorDataset(x[40:], y[40:])), n_experiences=2, seed=0)
    assert len(bm.train_stream) == 2
    seen = sorted(c for e in bm.train_stream for c in e.classes_in_this_experience)
    assert seen == [0, 1, 2, 3]
    assert dataset_targets(TensorDataset(x, y)).tolist() == y.tolist()


def test_tensor_dataset_without_integer_labels_is_a_clear_error():
    x, _ = _tensors()
    with pytest.raises(ValueError, match="integer class labels"):
        class_incremental((TensorDataset(x, x[:, 0]), TensorDataset(x, x[:, 0])), n_experiences=1)
    with pytest.raises(ValueError, match="TensorClassificationDataset"):
        dataset_targets(TensorDataset(x))


def test_offline_is_one_experience_with_every_class():
    x, y = _tensors()
    bm = offline(TensorDataset(x[:40], y[:40]), test=TensorDataset(x[40:], y[40:]))
    assert len(bm.train_stream) == len(bm.test_stream) == 1
    assert sorted(bm.train_stream[0].classes_in_this_experience) == [0, 1, 2, 3]
    assert len(bm.train_stream[0].dataset) == 40 and len(bm.test_stream[0].dataset) == 20
    assert len(offline("digits").train_stream) == 1
    assert len(SCENARIOS.build("offline:dataset=digits").train_stream) == 1
    with pytest.raises(TypeError, match="test="):
        offline(TensorDataset(x, y))


class _CountUpdates(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.per_experience = []

    def before_training_exp(self, strategy, **kwargs):
        self.per_experience.append(0)

    def after_update(self, strategy, **kwargs):
        self.per_experience[-1] += 1


@pytest.mark.parametrize("steps", [3, 7, 25])
def test_train_steps_is_an_exact_update_budget_per_experience(steps):
    x, y = _tensors(n=80)
    bm = class_incremental((TensorDataset(x, y), TensorDataset(x, y)), n_experiences=2, seed=0)  # 40 per exp
    model = MLP((5,), 4, hidden=(8,))
    counter = _CountUpdates()
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=16,
                     train_epochs=5, train_steps=steps, plugins=[counter], seed=0)
    for exp in bm.train_stream:  # 3 batches per epoch: a budget within one epoch, over several, ...
        strategy.train(exp)
    assert counter.per_experience == [steps, steps]
    assert strategy.train_epochs == 5  # restored after each experience


def test_train_steps_is_checked():
    model = MLP((5,), 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="train_steps"):
            Naive(model=model, optimizer=opt, train_steps=bad)
