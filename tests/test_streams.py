import numpy as np
import pytest
import torch

from scenarios import SCENARIOS, class_incremental, domain_incremental, task_incremental
from scenarios.datasets import TensorClassificationDataset
from scenarios.shifts import GaussianNoise, Identity, Permutation, Rotation


def _classes(exp):
    return set(int(c) for c in exp.dataset.targets.uniques)


def test_class_incremental_partitions_classes():
    bm = class_incremental("digits", n_experiences=5, seed=0)
    assert len(bm.train_stream) == len(bm.test_stream) == 5
    seen = set()
    for tr, te in zip(bm.train_stream, bm.test_stream):
        assert set(tr.classes_in_this_experience) == _classes(tr) == _classes(te)
        assert len(_classes(tr)) == 2 and not (seen & _classes(tr))
        assert tr.task_label == 0 and set(tr.dataset.targets_task_labels.uniques) == {0}
        assert set(tr.previous_classes) == seen
        seen |= _classes(tr)
    assert seen == set(range(10))
    assert bm.n_classes == 10 and bm.input_shape == (1, 8, 8)


def test_class_order_and_seed():
    bm = class_incremental("digits", n_experiences=2, class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert _classes(bm.train_stream[0]) == {9, 8, 7, 6, 5}
    a = class_incremental("digits", 5, seed=3).class_order
    assert a == class_incremental("digits", 5, seed=3).class_order
    assert a != class_incremental("digits", 5, seed=4).class_order


def test_task_incremental_task_labels_and_timeline():
    bm = task_incremental("digits", n_experiences=5, seed=0)
    for i, exp in enumerate(bm.train_stream):
        assert exp.task_label == i
        assert set(exp.dataset.targets_task_labels.uniques) == {i}
        assert len(exp.classes_in_this_experience) == 2
    assert bm.test_stream[3].task_label == 3


def test_domain_incremental_applies_each_shift():
    shifts = [Identity(), Rotation(90), Permutation(seed=1), GaussianNoise(0.5, seed=2)]
    bm = domain_incremental("digits", shifts)
    x0 = bm.train_stream[0].dataset[0][0]
    x1 = bm.train_stream[1].dataset[0][0]
    assert torch.allclose(torch.rot90(x0, 1, dims=(1, 2)), x1, atol=1e-5)
    for exp in bm.train_stream:
        assert _classes(exp) == set(range(10)) and exp.task_label == 0
    xp = bm.train_stream[2].dataset[0][0]
    assert torch.equal(torch.sort(xp.flatten()).values, torch.sort(x0.flatten()).values)


@pytest.mark.parametrize("bad, match", [
    (dict(n_experiences=3), "n_experiences=3 does not divide"),
    (dict(n_experiences=0), "n_experiences"),
    (dict(class_order=[0, 1, 2, 3, 4, 5, 6, 7, 8, 42]), r"class_order has classes \[42\]"),
    (dict(class_order=[0, 1, 2, 3, 4, 5, 6, 7, 8]), "class_order must list every class"),
])
def test_bad_arguments_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        class_incremental("digits", **{"n_experiences": 5, **bad})


def test_unknown_dataset_and_scenario():
    with pytest.raises(ValueError, match="dataset must be one of"):
        class_incremental("imagenet")
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        SCENARIOS.build("nope")
    with pytest.raises(ValueError, match="shifts"):
        domain_incremental("digits", [])


def test_user_dataset_pair():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 3, generator=g), torch.arange(60) % 4
    bm = class_incremental((TensorClassificationDataset(x, y), TensorClassificationDataset(x, y)), n_experiences=2)
    assert bm.n_classes == 4 and len(bm.train_stream[0].dataset) == 30


@pytest.mark.parametrize("name", ["split-digits", "split-mnist1d", "permuted-digits", "rotated-digits", "split-digits-tasks"])
def test_registered_scenarios_build(name):
    bm = SCENARIOS.build(name, seed=0)
    assert len(bm.train_stream) == 5
    assert hasattr(bm.train_stream[0], "classes_in_this_experience")
