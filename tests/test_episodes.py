"""Few-shot episodes (scenarios.episodes) and the generated glyphs (scenarios.datasets.glyphs)."""
import random

import pytest
import torch

from scenarios.datasets import TensorClassificationDataset, glyphs
from scenarios.episodes import (
    EpisodeSampler, TensorTaskDataset, check_disjoint, episode_spec, few_shot_benchmark, labels_to_indices,
    learn2learn_taskset, meta_dataset,
)


@pytest.fixture(scope="module")
def small_glyphs():
    return glyphs(n_classes=40, samples_per_class=20, seed=3)


def _toy(n_classes=6, per_class=10):
    y = torch.arange(n_classes).repeat_interleave(per_class)
    x = torch.arange(len(y), dtype=torch.float32)[:, None]  # x = sample index: lets us trace samples
    return TensorClassificationDataset(x, y)


# ---------------------------------------------------------------- glyphs
def test_glyphs_shapes_classes_and_disjoint_split(small_glyphs):
    bg, ev = small_glyphs
    assert bg.x.shape[1:] == (1, 28, 28) and ev.x.shape[1:] == (1, 28, 28)
    assert len(bg.classes) == 24 and len(ev.classes) == 16
    assert set(bg.classes).isdisjoint(ev.classes)
    assert torch.bincount(bg.y).unique().tolist() == [20]
    assert 0.0 <= float(bg.x.min()) and float(bg.x.max()) <= 1.0
    assert float(bg.x.mean()) > 0.02  # something is drawn


def test_glyphs_are_seeded_and_distortions_vary_samples(tmp_path, monkeypatch):
    a, _ = glyphs(n_classes=10, samples_per_class=5, seed=7)
    monkeypatch.setenv("KTA_DATA", str(tmp_path))  # fresh cache: regenerate
    b, _ = glyphs(n_classes=10, samples_per_class=5, seed=7)
    assert torch.equal(a.x, b.x)
    c, _ = glyphs(n_classes=10, samples_per_class=5, seed=8)
    assert not torch.equal(a.x, c.x)
    same, _ = glyphs(n_classes=10, samples_per_class=5, seed=7, distortion=0.0)
    assert torch.equal(same.x[0], same.x[1])  # no distortion: identical copies of a character
    assert not torch.equal(a.x[0], a.x[1])  # distortion: two drawings differ
    # ... but a drawing is closer to its own class than to another class, on average
    d_same = (a.x[0:5] - a.x[0:1]).abs().mean()
    d_other = (a.x[5:10] - a.x[0:1]).abs().mean()
    assert d_same < d_other


def test_glyphs_bad_arguments_name_them():
    with pytest.raises(ValueError, match="n_classes"):
        glyphs(n_classes=1)
    with pytest.raises(ValueError, match="background_classes"):
        glyphs(n_classes=10, background_classes=10)
    with pytest.raises(TypeError, match="samples_per_class"):
        glyphs(n_classes=10, samples_per_class=2.5)


# ---------------------------------------------------------------- episodes
@pytest.mark.parametrize("n,k,q", [(5, 1, 15), (5, 5, 15), (3, 2, 4)])
def test_episode_has_n_classes_k_support_q_query_labels_0_to_n_minus_1(small_glyphs, n, k, q):
    _, ev = small_glyphs
    s = EpisodeSampler(ev, n_ways=n, k_shots=k, q_queries=q, seed=0)
    for _ in range(5):
        ep = s.sample()
        assert ep.support_x.shape == (n * k, 1, 28, 28) and ep.query_x.shape == (n * q, 1, 28, 28)
        assert torch.equal(ep.support_y, torch.arange(n).repeat_interleave(k))
        assert torch.equal(ep.query_y, torch.arange(n).repeat_interleave(q))
        assert len(set(ep.classes.tolist())) == n and set(ep.classes.tolist()) <= set(ev.classes)


def test_episode_labels_map_to_the_drawn_classes_and_support_query_are_distinct():
    data = _toy(n_classes=6, per_class=10)
    s = EpisodeSampler(data, n_ways=4, k_shots=3, q_queries=5, seed=1)
    for _ in range(10):
        ep = s.sample()
        s_idx, q_idx = ep.support_x[:, 0].long(), ep.query_x[:, 0].long()
        assert torch.equal(data.y[s_idx], ep.classes[ep.support_y])
        assert torch.equal(data.y[q_idx], ep.classes[ep.query_y])
        assert len(set(s_idx.tolist()) | set(q_idx.tolist())) == 4 * 8  # no sample used twice


def test_sampler_is_seeded_and_leaves_the_global_random_state_alone():
    data = _toy()
    random.seed(123)
    before = random.getstate()
    a = [EpisodeSampler(data, 3, 1, 2, seed=5).sample().support_x for _ in range(2)]
    assert random.getstate() == before
    assert torch.equal(a[0], a[1])
    s = EpisodeSampler(data, 3, 1, 2, seed=5)
    assert not all(torch.equal(s.sample().query_x, s.sample().query_x) for _ in range(3))
    # chunked and one-by-one sampling give the same sequence of tasks
    s1, s2 = EpisodeSampler(data, 3, 1, 2, seed=9), EpisodeSampler(data, 3, 1, 2, seed=9)
    assert torch.equal(torch.cat([s1.sample_indices(1) for _ in range(70)]), s2.sample_indices(70))


def test_tasks_come_from_learn2learn_taskset_and_batches_do_not_depend_on_the_call_size():
    import learn2learn as l2l

    from scenarios.episodes import task_indices

    data = _toy(n_classes=6, per_class=10)
    s = EpisodeSampler(data, 3, 2, 2, seed=4)
    assert isinstance(s.taskset, l2l.data.Taskset) and s.taskset.task_collate is task_indices
    assert isinstance(s.transform, l2l.data.transforms.FusedNWaysKShots)
    # the learn2learn task description, in the Taskset's random state, is the sampler's first task
    ref = random.Random(4)
    saved = random.getstate()
    random.setstate(ref.getstate())
    first = s.taskset[0]
    random.setstate(saved)
    assert torch.equal(s.sample_indices(1).flatten(), torch.tensor(first))
    # one task per call or 70 at once (across refills of the buffer): the same tasks, the same samples
    s1, s2 = EpisodeSampler(data, 3, 2, 2, seed=9), EpisodeSampler(data, 3, 2, 2, seed=9)
    one = [s1.sample_batch(1) for _ in range(70)]
    many = s2.sample_batch(70)
    for field, whole in zip(zip(*one), many):
        assert torch.equal(torch.cat(field), whole)
    sx, sy, qx, qy, cls = many
    assert torch.equal(data.y[sx[:, :, 0].long()], cls.gather(1, sy))  # support sample -> its class
    assert torch.equal(data.y[qx[:, :, 0].long()], cls.gather(1, qy))


def test_restricting_classes(small_glyphs):
    _, ev = small_glyphs
    allowed = ev.classes[:6]
    s = EpisodeSampler(ev, 5, 1, 3, classes=allowed, seed=0)
    for _ in range(10):
        assert set(s.sample().classes.tolist()) <= set(allowed)
    with pytest.raises(ValueError, match="not in the data"):
        EpisodeSampler(ev, 5, 1, 3, classes=[10_000, 10_001, 10_002, 10_003, 10_004])


def test_bad_episode_shapes_are_clear_errors():
    data = _toy(n_classes=6, per_class=10)
    with pytest.raises(ValueError, match=r"k_shots \+ q_queries .* smallest class"):
        EpisodeSampler(data, n_ways=3, k_shots=5, q_queries=6)
    with pytest.raises(ValueError, match="n_ways=7 is larger than the number of classes"):
        EpisodeSampler(data, n_ways=7, k_shots=1, q_queries=1)
    with pytest.raises(ValueError, match="n_ways"):
        EpisodeSampler(data, n_ways=1)
    with pytest.raises(TypeError, match="k_shots"):
        EpisodeSampler(data, n_ways=2, k_shots=1.5)


def test_episodes_from_an_avalanche_experience_through_a_torch_dataset_adapter():
    from scenarios import class_incremental

    bm = class_incremental("digits", n_experiences=2, seed=0)
    exp = bm.train_stream[0]
    md = meta_dataset(exp)  # learn2learn's MetaDataset rejects Avalanche datasets: adapter
    assert isinstance(md.dataset, TensorTaskDataset)
    assert set(md.labels) == set(exp.classes_in_this_experience)
    ep = EpisodeSampler(exp, n_ways=5, k_shots=2, q_queries=3, seed=0).sample()
    assert set(ep.classes.tolist()) == set(exp.classes_in_this_experience)
    with pytest.raises(ValueError, match="n_ways=6"):
        EpisodeSampler(exp, n_ways=6)


def test_labels_to_indices_is_built_from_the_targets():
    y = torch.tensor([2, 0, 2, 1, 0, 2])
    assert labels_to_indices(y) == {0: [1, 4], 1: [3], 2: [0, 2, 5]}


def test_stock_learn2learn_pipeline_gives_n_times_k_plus_q_samples(small_glyphs):
    _, ev = small_glyphs
    ts = learn2learn_taskset(ev, n_ways=5, k_shots=1, q_queries=3)
    x, y = ts.sample()
    assert x.shape == (20, 1, 28, 28) and sorted(torch.bincount(y).tolist()) == [4] * 5


# ---------------------------------------------------------------- few-shot benchmarks
def test_meta_train_and_meta_test_classes_are_disjoint(small_glyphs):
    bg, ev = small_glyphs
    bm = few_shot_benchmark(bg, ev, n_ways=5, k_shots=1, q_queries=5, n_experiences=2, seed=0)
    train_classes = set().union(*(e.classes_in_this_experience for e in bm.train_stream))
    unseen = bm.test_stream[bm.unseen_index].classes_in_this_experience
    assert train_classes == set(bm.meta_train_classes) and set(unseen) == set(bm.meta_test_classes)
    assert train_classes.isdisjoint(unseen)
    a, b = (e.classes_in_this_experience for e in bm.train_stream)
    assert a.isdisjoint(b) and len(a) == len(b) == 12  # continual: new class sets
    assert bm.unseen_index == 2 and len(bm.test_stream) == 3
    assert episode_spec(bm.train_stream[0]) == {"n_ways": 5, "k_shots": 1, "q_queries": 5}
    assert bm.n_classes == 5 and bm.input_shape == (1, 28, 28)


def test_overlapping_splits_and_impossible_streams_are_clear_errors(small_glyphs):
    bg, ev = small_glyphs
    with pytest.raises(ValueError, match="overlap"):
        check_disjoint([1, 2, 3], [3, 4])
    with pytest.raises(ValueError, match="train_classes and test_classes overlap"):
        few_shot_benchmark(bg, bg, n_ways=5, k_shots=1, q_queries=5)
    data = _toy(n_classes=8, per_class=10)
    with pytest.raises(ValueError, match="overlap"):
        few_shot_benchmark(data, n_ways=2, train_classes=[0, 1, 2, 3], test_classes=[3, 4, 5])
    with pytest.raises(ValueError, match="n_experiences=3 x n_ways=2"):
        few_shot_benchmark(data, n_ways=2, k_shots=1, q_queries=1, train_classes=[0, 1, 2, 3],
                           test_classes=[4, 5], n_experiences=3)
    with pytest.raises(ValueError, match=r"k_shots \+ q_queries = 11"):
        few_shot_benchmark(data, n_ways=2, k_shots=1, q_queries=10, train_classes=[0, 1], test_classes=[4, 5])


def test_independently_numbered_datasets_are_made_disjoint_with_a_label_offset():
    a, b = _toy(n_classes=6, per_class=10), _toy(n_classes=5, per_class=10)  # both number classes from 0
    with pytest.raises(ValueError, match="overlap"):
        few_shot_benchmark(a, b, n_ways=3, k_shots=1, q_queries=2)
    bm = few_shot_benchmark(a, b, n_ways=3, k_shots=1, q_queries=2, test_label_offset=6)
    assert bm.meta_test_classes == [6, 7, 8, 9, 10]
    assert set(bm.test_stream[bm.unseen_index].classes_in_this_experience) == {6, 7, 8, 9, 10}


def test_named_scenarios_are_registered():
    from scenarios.registry import SCENARIOS, load_all

    load_all()
    for name in ("glyphs-5way-1shot", "glyphs-5way-5shot", "mnist1d-4way-1shot"):
        assert name in SCENARIOS
    bm = SCENARIOS.build("mnist1d-4way-1shot", seed=0)
    assert bm.meta_train_classes == list(range(6)) and bm.meta_test_classes == list(range(6, 10))
    assert (bm.n_ways, bm.k_shots, bm.input_shape) == (4, 1, (1, 40))
    bm = SCENARIOS.build("glyphs-5way-5shot:n_classes=60", seed=0)
    assert (bm.n_ways, bm.k_shots, bm.q_queries) == (5, 5, 15)
    assert set(bm.meta_train_classes).isdisjoint(bm.meta_test_classes)
