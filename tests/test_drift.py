"""Concept-drift streams (scenarios.drift) and the forgetting-vs-drift split (strategies.drift)."""
import warnings

import numpy as np
import pytest
import torch

from scenarios.datasets import TensorClassificationDataset, digits
from scenarios.drift import drift_fractions, drift_stream, remap_classes
from scenarios.registry import SCENARIOS, RegistryError
from strategies.drift import drift_split, format_drift, forgetting_vs_drift, train_with_drift_split


@pytest.fixture(scope="module")
def small():
    train, test = digits(seed=0)
    return (TensorClassificationDataset(train.x[:300], train.y[:300]),
            TensorClassificationDataset(test.x[:150], test.y[:150]))


def _labels(exp):
    ds = exp.dataset
    return torch.tensor([int(ds[i][1]) for i in range(len(ds))])


def test_fractions_are_as_stated():
    assert drift_fractions(5, "sudden", start=2) == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert drift_fractions(5, "sudden") == [0.0, 0.0, 1.0, 1.0, 1.0]  # start = n // 2
    assert drift_fractions(4, "sudden", start=3) == [0.0, 0.0, 0.0, 1.0]
    assert drift_fractions(5, "gradual") == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="start"):
        drift_fractions(5, "sudden", start=0)
    with pytest.raises(ValueError, match="start"):
        drift_fractions(5, "gradual", start=2)
    with pytest.raises(ValueError, match="drift"):
        drift_fractions(5, "abrupt")


def test_remapping_is_a_seeded_cyclic_derangement():
    m = remap_classes(range(10), 4, seed=0)
    assert len(m) == 4 and set(m) == set(m.values())
    assert all(c != new for c, new in m.items())
    c = next(iter(m))  # one cycle through all 4 classes
    orbit = [c]
    for _ in range(3):
        orbit.append(m[orbit[-1]])
    assert sorted(orbit) == sorted(m) and m[orbit[-1]] == c
    assert remap_classes(range(10), 4, seed=0) == m
    assert remap_classes(range(10), 4, seed=1) != m
    with pytest.raises(ValueError, match="n_remapped"):
        remap_classes(range(10), 1)


def _check_concept(y_orig, y_concept, mapping, fraction):
    for c in range(10):
        members = y_orig == c
        if c not in mapping:
            assert torch.equal(y_concept[members], y_orig[members]), c
            continue
        n_c = int(members.sum())
        moved = int((y_concept[members] == mapping[c]).sum())
        assert moved == int(np.floor(fraction * n_c + 0.5)), (c, fraction)
        assert moved + int((y_concept[members] == c).sum()) == n_c


def test_gradual_remapping_moves_exactly_the_stated_fraction(small):
    train, test = small
    bm = drift_stream(small, n_experiences=5, drift="gradual", n_remapped=4, seed=3)
    assert bm.fractions == [0.0, 0.25, 0.5, 0.75, 1.0] and bm.kind == "concept-drift"
    for k, exp in enumerate(bm.train_stream):
        idx = torch.as_tensor(bm.train_indices[k])
        _check_concept(train.y[idx], _labels(exp), bm.mapping, bm.fractions[k])
    changed_before = torch.zeros(len(test.y), dtype=torch.bool)
    for k, exp in enumerate(bm.test_stream):
        assert torch.equal(_labels(exp), bm.test_labels[k])
        assert torch.equal(torch.stack([exp.dataset[i][0] for i in range(len(exp.dataset))]), test.x)
        _check_concept(test.y, bm.test_labels[k], bm.mapping, bm.fractions[k])
        changed = bm.test_labels[k] != test.y
        assert bool((changed_before <= changed).all())  # nested: a remapped sample stays remapped
        changed_before = changed


def test_sudden_drift_remaps_all_drifting_classes_from_start(small):
    train, test = small
    bm = drift_stream(small, n_experiences=4, drift="sudden", n_remapped=3, start=1, seed=0)
    assert bm.fractions == [0.0, 1.0, 1.0, 1.0]
    assert torch.equal(bm.test_labels[0], test.y)
    expected = test.y.clone()
    for c, new in bm.mapping.items():
        expected[test.y == c] = new
    for k in (1, 2, 3):
        assert torch.equal(bm.test_labels[k], expected)
    a = drift_stream(small, n_experiences=4, drift="sudden", n_remapped=3, start=1, seed=0)
    assert a.mapping == bm.mapping and all(np.array_equal(x, y) for x, y in zip(a.train_indices, bm.train_indices))


def test_split_on_a_hand_made_example():
    y_old = [0, 0, 1, 1, 2, 2, 3, 3]
    y_new = [0, 0, 1, 1, 3, 3, 2, 2]        # the last four inputs changed label
    before = [0, 0, 1, 0, 2, 2, 3, 1]       # unchanged: 3/4 right; changed (old labels): 3/4 right
    after = [0, 1, 1, 0, 3, 3, 2, 3]        # unchanged: 2/4; changed, old labels: 1/4; new labels: 3/4
    s = forgetting_vs_drift(y_old, y_new, before, after)
    assert s["changed_fraction"] == 0.5
    assert s["forgetting"] == pytest.approx(0.75 - 0.5)
    assert s["drift"] == pytest.approx(0.75 - 0.25)
    assert s["adaptation"] == pytest.approx(0.75)
    assert s["drop"] == pytest.approx(6 / 8 - 3 / 8)
    assert s["forgetting_part"] == pytest.approx(0.125) and s["drift_part"] == pytest.approx(0.25)
    assert s["forgetting_part"] + s["drift_part"] == pytest.approx(s["drop"])
    with pytest.raises(ValueError, match="pred_after"):
        forgetting_vs_drift(y_old, y_new, before, after[:3])


def test_split_over_a_stream_means_and_no_drift_case():
    labels = [np.array([0, 1, 2, 3]), np.array([0, 1, 3, 2]), np.array([0, 1, 3, 2])]
    after_each = [np.array([0, 1, 2, 3]), np.array([0, 0, 3, 2])]
    final = np.array([0, 1, 3, 2])
    out = drift_split(labels, after_each, final)
    j0, j1 = out["per_experience"]
    assert (j0["forgetting"], j0["drift"], j0["adaptation"]) == (0.0, 1.0, 1.0)
    # experience 1 already had the final concept: no changed label, the rise on input 1 is negative forgetting
    assert j1["changed_fraction"] == 0.0 and np.isnan(j1["drift"]) and j1["drift_part"] == 0.0
    assert j1["forgetting"] == pytest.approx(-0.25)
    assert out["mean"]["drift"] == 1.0  # NaN skipped
    assert out["mean"]["drop"] == pytest.approx(out["mean"]["forgetting_part"] + out["mean"]["drift_part"])
    assert "mean" in format_drift(out)


def test_tiny_drift_stream_end_to_end(small):
    from kta_plugins.nn import MLP
    from strategies import Naive

    bm = drift_stream(small, n_experiences=3, drift="sudden", n_remapped=4, start=1, seed=0)
    torch.manual_seed(0)
    model = MLP(bm.input_shape, 10, hidden=(32,))
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), train_epochs=10,
              train_mb_size=16, seed=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        A, split = train_with_drift_split(s, bm)
    assert A.shape == (3, 3)
    # the split's drop is the accuracy matrix's A[j, j] - A[T, j] (same inputs, same labels)
    for j, p in enumerate(split["per_experience"]):
        assert p["drop"] == pytest.approx(A[j, j] - A[-1, j], abs=1e-6)
        assert p["forgetting_part"] + p["drift_part"] == pytest.approx(p["drop"])
    # after the sudden drift the model follows the new concept: the changed inputs of exp 0 are mostly
    # wrong under their old labels (drift), right under the new ones
    p0 = split["per_experience"][0]
    assert p0["changed_fraction"] > 0.3 and p0["drift"] > 0.5 and p0["adaptation"] > 0.5


def test_kta_run_on_drift_digits():
    from strategies.cli import run

    r = run("drift-digits:n_experiences=3,drift=gradual", "naive", epochs=1, seed=0, log_dir=None, progress=False)
    A = np.array(r["accuracy_matrix"])
    assert A.shape == (3, 3) and np.isfinite(A).all()
    # kta run reports the forgetting / drift split, and its parts add up to the drop
    split = r["drift_split"]
    assert len(split["per_experience"]) == 2
    for p in split["per_experience"]:
        assert p["drop"] == pytest.approx(p["forgetting_part"] + p["drift_part"])
    bm = SCENARIOS.build("drift-digits:n_experiences=3,drift=gradual", seed=0)
    assert bm.fractions == [0.0, 0.5, 1.0]
    with pytest.raises(RegistryError, match="start"):
        SCENARIOS.build("drift-digits:start=9", seed=0)
