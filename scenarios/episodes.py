"""Few-shot episodes (N-way K-shot Q-query tasks) from any experience or dataset, with learn2learn.

An *episode* (a task) draws ``n_ways`` classes, then ``k_shots + q_queries``
distinct samples of each; the first ``k_shots`` of each class form the
support set, the others the query set; labels are renumbered ``0..N-1`` in
the order the classes were drawn.

Sampling goes through learn2learn's ``MetaDataset`` / ``Taskset`` with the
fused ``FusedNWaysKShots`` transform (``NWays`` placed after another transform
fails on Python 3.11), and avoids learn2learn's known traps:

* ``MetaDataset`` rejects Avalanche datasets: the data go through
  :class:`TensorTaskDataset`, a plain torch ``Dataset`` over ``(x, y)`` tensors;
* ``labels_to_indices`` is built from the targets in one pass (learn2learn
  would otherwise call ``__getitem__`` on every sample);
* meta-train and meta-test classes are kept disjoint, and checked to be
  (learn2learn's ``get_tasksets('omniglot')`` leaks test classes into training);
* learn2learn samples with Python's global ``random``; each sampler keeps its own
  seeded state and swaps it in only while sampling, so episodes are reproducible
  and the global state is left alone.

Speed: the sampler's ``Taskset`` has no ``LoadData`` and its ``task_collate``
(:func:`task_indices`) keeps each task as its list of dataset indices; task
descriptions are drawn in blocks of 64, and a call then cuts the samples of its
tasks from the tensors with one ``index_select`` for the support sets and one
for the query sets (``LoadData`` and the default collate would call
``__getitem__`` and stack tensors once per sample; ``RemapLabels`` would find
each label with ``list.index``). Labels ``0..N-1`` follow from the order of the
description, which ``FusedNWaysKShots`` groups by class. What remains is
learn2learn's own cost of drawing a description (``random.sample`` per class).
:func:`learn2learn_taskset` builds the stock learn2learn pipeline
(``LoadData``, ``RemapLabels``, ``ConsecutiveLabels``) for comparison.

Example:
    >>> from scenarios.datasets import glyphs
    >>> background, evaluation = glyphs(n_classes=200)
    >>> sampler = EpisodeSampler(evaluation, n_ways=5, k_shots=1, q_queries=15, seed=0)
    >>> ep = sampler.sample()
    >>> ep.support_x.shape, ep.query_y.unique().tolist()
    (torch.Size([5, 1, 28, 28]), [0, 1, 2, 3, 4])
"""
from __future__ import annotations

import contextlib
import numbers
import random
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "Episode", "EpisodeSampler", "EpisodeLoader", "TensorTaskDataset", "as_tensors", "labels_to_indices",
    "task_indices",
    "meta_dataset", "learn2learn_taskset", "check_disjoint", "few_shot_benchmark", "episode_spec",
]


# ---------------------------------------------------------------- checks
def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _class_list(name, classes) -> list[int]:
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise TypeError(f"{name} must be a sequence of class ids, got {type(classes).__name__}")
    out = [int(c) for c in classes]
    if len(set(out)) != len(out):
        raise ValueError(f"{name} repeats classes: {out}")
    return out


def check_disjoint(train_classes: Sequence[int], test_classes: Sequence[int]) -> None:
    """``ValueError`` when meta-train and meta-test classes overlap (a leak of test classes)."""
    common = sorted(set(map(int, train_classes)) & set(map(int, test_classes)))
    if common:
        raise ValueError(
            f"train_classes and test_classes overlap: {common[:20]}{' ...' if len(common) > 20 else ''} "
            f"({len(common)} classes); few-shot evaluation needs classes never seen in meta-training"
        )


# ---------------------------------------------------------------- data adapters
class TensorTaskDataset(Dataset):
    """A plain torch ``Dataset`` over ``(x, y)`` tensors: what learn2learn's ``MetaDataset`` accepts.

    Args:
        x: inputs, first dimension indexes samples.
        y: integer labels ``(n,)``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        self.x = x
        self.targets = torch.as_tensor(y, dtype=torch.long)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.x[i], int(self.targets[i])


def as_tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors of a dataset, an Avalanche dataset or an Avalanche experience.

    Tensor-backed data (``TensorDataset`` leaves, KTA's embedded datasets and
    streams) are read without any per-sample call; other datasets are read
    once, sample by sample.
    """
    if hasattr(data, "dataset") and hasattr(data, "current_experience"):  # an Avalanche experience
        data = data.dataset
    if isinstance(data, TensorTaskDataset):
        return data.x, data.targets
    if isinstance(data, torch.utils.data.TensorDataset):
        return data.tensors[0], torch.as_tensor(data.tensors[1], dtype=torch.long)
    if getattr(data, "_flat_data", None) is not None:  # Avalanche dataset
        from .loaders import tensor_view

        fields = tensor_view(data)
        if fields is not None:
            return fields[0], fields[1].long()
    if not isinstance(data, Dataset) and not hasattr(data, "__getitem__"):
        raise TypeError(f"expected a dataset or an experience, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("the dataset is empty")
    xs, ys = [], []
    for i in range(len(data)):
        item = data[i]
        xs.append(torch.as_tensor(item[0]))
        ys.append(int(item[1]))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def labels_to_indices(y: torch.Tensor) -> dict[int, list[int]]:
    """``{class: [indices]}`` from the targets, in one vectorised pass."""
    y = np.asarray(torch.as_tensor(y))
    order = np.argsort(y, kind="stable")
    classes, starts = np.unique(y[order], return_index=True)
    bounds = list(starts[1:]) + [len(y)]
    return {int(c): order[s:e].tolist() for c, s, e in zip(classes, starts, bounds)}


def meta_dataset(data):
    """A learn2learn ``MetaDataset`` over ``data`` (through :class:`TensorTaskDataset`)."""
    import learn2learn as l2l

    x, y = as_tensors(data)
    return l2l.data.MetaDataset(TensorTaskDataset(x, y), labels_to_indices=labels_to_indices(y))


def learn2learn_taskset(data, n_ways: int, k_shots: int, q_queries: int, classes: Optional[Sequence[int]] = None):
    """The stock learn2learn pipeline: ``Taskset`` with ``FusedNWaysKShots``, ``LoadData``, ``RemapLabels``,
    ``ConsecutiveLabels``. ``taskset.sample()`` gives ``(x, y)`` of ``N * (K + Q)`` samples grouped by class."""
    import learn2learn as l2l

    ds = meta_dataset(data)
    filt = list(ds.labels) if classes is None else _class_list("classes", classes)
    T = l2l.data.transforms
    return l2l.data.Taskset(ds, [
        T.FusedNWaysKShots(ds, n=int(n_ways), k=int(k_shots) + int(q_queries), filter_labels=filt),
        T.LoadData(ds), T.RemapLabels(ds), T.ConsecutiveLabels(ds),
    ], num_tasks=-1)


# ---------------------------------------------------------------- episodes
def task_indices(data: list) -> list:
    """learn2learn ``task_collate`` of :class:`EpisodeSampler`'s ``Taskset``: the task's sample indices, as is.

    Without ``LoadData`` each sample of a task description is its dataset index;
    stacking them is left to the sampler, which gathers the samples of many tasks
    with one ``index_select`` instead of collating one sample at a time.
    """
    return data


@dataclass
class Episode:
    """One N-way K-shot Q-query task.

    ``support_x`` ``(N*K, ...)``, ``support_y`` ``(N*K,)``, ``query_x``
    ``(N*Q, ...)``, ``query_y`` ``(N*Q,)``; labels in ``0..N-1``, grouped by
    class; ``classes[i]`` is the dataset's class id behind label ``i``.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor

    def to(self, device) -> "Episode":
        return Episode(*(t.to(device) for t in (self.support_x, self.support_y, self.query_x, self.query_y,
                                                   self.classes)))


@contextlib.contextmanager
def _rng_swapped(state_holder: random.Random):
    """Run learn2learn (which uses the global ``random``) with our own generator's state."""
    saved = random.getstate()
    random.setstate(state_holder.getstate())
    try:
        yield
    finally:
        state_holder.setstate(random.getstate())
        random.setstate(saved)


class EpisodeSampler:
    """N-way K-shot Q-query episodes of a dataset or experience, sampled with learn2learn.

    Args:
        data: a dataset with integer labels (``TensorDataset``, an Avalanche
            dataset, any ``(x, y)`` torch dataset) or an Avalanche experience.
        n_ways: classes per episode (>= 2).
        k_shots: support samples per class (>= 1).
        q_queries: query samples per class (>= 1).
        classes: restrict episodes to these classes (default: every class of ``data``).
        seed: seed of the sampler's own random state.

    Raises:
        ValueError: ``n_ways`` larger than the number of classes, or
            ``k_shots + q_queries`` larger than the smallest class (naming the class).

    Example:
        >>> sampler = EpisodeSampler(experience, n_ways=5, k_shots=5, q_queries=15, seed=0)
        >>> for ep in sampler.loader(n_batches=100, meta_batch_size=4): ...
    """

    def __init__(self, data, n_ways: int = 5, k_shots: int = 1, q_queries: int = 15,
                 classes: Optional[Sequence[int]] = None, seed: int = 0):
        import learn2learn as l2l

        self.n_ways = _check_int("n_ways", n_ways, 2)
        self.k_shots = _check_int("k_shots", k_shots, 1)
        self.q_queries = _check_int("q_queries", q_queries, 1)
        seed = _check_int("seed", seed, 0)
        self.x, self.y = as_tensors(data)
        l2i = labels_to_indices(self.y)
        if classes is None:
            classes = sorted(l2i)
        else:
            classes = _class_list("classes", classes)
            unknown = sorted(set(classes) - set(l2i))
            if unknown:
                raise ValueError(f"classes {unknown[:20]} are not in the data (it has classes {sorted(l2i)[:20]}...)")
        self.classes = classes
        if self.n_ways > len(classes):
            raise ValueError(
                f"n_ways={self.n_ways} is larger than the number of classes available ({len(classes)}: "
                f"{classes[:20]}{' ...' if len(classes) > 20 else ''})"
            )
        need = self.k_shots + self.q_queries
        smallest = min(classes, key=lambda c: len(l2i[c]))
        if len(l2i[smallest]) < need:
            raise ValueError(
                f"k_shots + q_queries = {self.k_shots} + {self.q_queries} = {need} is larger than the smallest "
                f"class (class {smallest} has {len(l2i[smallest])} samples); lower k_shots or q_queries"
            )
        self.meta = l2l.data.MetaDataset(TensorTaskDataset(self.x, self.y), labels_to_indices=l2i)
        self.transform = l2l.data.transforms.FusedNWaysKShots(self.meta, n=self.n_ways, k=need,
                                                              filter_labels=list(classes))
        # No LoadData: a task's description stays a list of dataset indices, which the
        # task_collate (task_indices) hands over as is; the samples are then gathered by index
        # tensor (LoadData + the default collate would fetch and stack them one at a time).
        self.taskset = l2l.data.Taskset(self.meta, [self.transform], num_tasks=-1, task_collate=task_indices)
        self._rng = random.Random(seed)
        self._support_y = torch.arange(self.n_ways).repeat_interleave(self.k_shots)
        self._query_y = torch.arange(self.n_ways).repeat_interleave(self.q_queries)
        self._fill(torch.empty(0, self.n_ways, need, dtype=torch.long))

    def __repr__(self):
        return (f"EpisodeSampler({self.n_ways}-way {self.k_shots}-shot {self.q_queries}-query, "
                f"{len(self.classes)} classes, {len(self.y)} samples)")

    def _draw(self, n_tasks: int) -> torch.Tensor:
        # taskset[0], not taskset.sample(): sample() spends a random draw choosing among the
        # taskset's one (ever-resampled) task; [0] gives a fresh FusedNWaysKShots description
        # through Taskset.get_task and task_indices, nothing else.
        with _rng_swapped(self._rng):
            idx = [self.taskset[0] for _ in range(n_tasks)]
        return torch.from_numpy(np.array(idx, dtype=np.int64)).view(n_tasks, self.n_ways, -1)

    def _fill(self, buffer: torch.Tensor) -> None:
        """Take ``buffer`` (drawn tasks' indices) and precompute what each call slices from it."""
        M, K = len(buffer), self.k_shots
        self._buffer, self._pos = buffer, 0
        self._s_idx = buffer[:, :, :K].reshape(-1)  # support indices, task after task
        self._q_idx = buffer[:, :, K:].reshape(-1)
        self._classes = self.y.index_select(0, buffer[:, :, 0].reshape(-1)).view(M, self.n_ways)
        self._s_y = self._support_y.expand(M, -1)
        self._q_y = self._query_y.expand(M, -1)

    def _next(self, n_tasks: int) -> tuple[int, int]:
        """Positions ``[a, b)`` of the next ``n_tasks`` tasks in the buffer, refilled when short.

        Descriptions are drawn in blocks of at least 64 tasks (one swap of the random state per block).
        """
        if type(n_tasks) is not int or n_tasks < 1:
            n_tasks = _check_int("n_tasks", n_tasks, 1)
        if len(self._buffer) - self._pos < n_tasks:
            rest = self._buffer[self._pos:]
            self._fill(torch.cat([rest, self._draw(max(64, n_tasks - len(rest)))]))
        a = self._pos
        self._pos += n_tasks
        return a, self._pos

    def sample_indices(self, n_tasks: int = 1) -> torch.Tensor:
        """Dataset indices of ``n_tasks`` tasks, ``(n_tasks, N, K + Q)``; row ``i`` of a task is label ``i``.

        The sequence of tasks depends on the seed only, not on how many tasks each call asks for.
        """
        a, b = self._next(n_tasks)
        return self._buffer[a:b]

    def sample_batch(self, n_tasks: int = 1) -> list[torch.Tensor]:
        """``n_tasks`` tasks stacked: ``[support_x (B, N*K, ...), support_y (B, N*K), query_x (B, N*Q, ...),
        query_y (B, N*Q), classes (B, N)]``."""
        a, b = self._next(n_tasks)
        nk, nq = self.n_ways * self.k_shots, self.n_ways * self.q_queries
        shape = self.x.shape[1:]
        # index_select: much cheaper than advanced indexing for a few rows of a big tensor.
        return [
            self.x.index_select(0, self._s_idx[a * nk:b * nk]).view(b - a, nk, *shape), self._s_y[a:b],
            self.x.index_select(0, self._q_idx[a * nq:b * nq]).view(b - a, nq, *shape), self._q_y[a:b],
            self._classes[a:b],
        ]

    def sample(self) -> Episode:
        """One :class:`Episode`."""
        sx, sy, qx, qy, cls = self.sample_batch(1)
        return Episode(sx[0], sy[0], qx[0], qy[0], cls[0])

    def loader(self, n_batches: int, meta_batch_size: int = 1) -> "EpisodeLoader":
        """An iterable of ``n_batches`` meta-batches of ``meta_batch_size`` tasks (see :class:`EpisodeLoader`)."""
        return EpisodeLoader(self, n_batches, meta_batch_size)


class EpisodeLoader:
    """Meta-batches for Avalanche's training loop: ``[query_x, query_y, support_x, support_y, classes, t]``.

    ``query_x`` ``(B*N*Q, ...)`` and ``query_y`` ``(B*N*Q,)`` come first, so that
    Avalanche's ``mb_x`` / ``mb_y`` (and its accuracy metrics) see the query
    samples; ``support_x`` ``(B, N*K, ...)``, ``support_y`` ``(B, N*K)``,
    ``classes`` ``(B, N)``; the last field is the task label (0) of each query.
    """

    def __init__(self, sampler: EpisodeSampler, n_batches: int, meta_batch_size: int = 1):
        self.sampler = sampler
        self.n_batches = _check_int("n_batches", n_batches, 1)
        self.meta_batch_size = _check_int("meta_batch_size", meta_batch_size, 1)

    def __len__(self):
        return self.n_batches

    def __iter__(self):
        for _ in range(self.n_batches):
            sx, sy, qx, qy, cls = self.sampler.sample_batch(self.meta_batch_size)
            yield [qx.flatten(0, 1), qy.flatten(), sx, sy, cls, torch.zeros(qy.numel(), dtype=torch.long)]


# ---------------------------------------------------------------- few-shot benchmarks
def episode_spec(experience) -> Optional[dict]:
    """The ``{"n_ways", "k_shots", "q_queries"}`` of a few-shot stream built here, or ``None``."""
    return getattr(getattr(experience, "origin_stream", None), "episode_spec", None)


def _subset_classes(y: torch.Tensor, classes) -> np.ndarray:
    return np.flatnonzero(np.isin(np.asarray(y), list(classes)))


def few_shot_benchmark(train, test=None, *, n_ways: int = 5, k_shots: int = 1, q_queries: int = 15,
                       train_classes: Optional[Sequence[int]] = None, test_classes: Optional[Sequence[int]] = None,
                       n_experiences: int = 1, eval_seen: bool = True, test_label_offset: int = 0,
                       seed: int = 0):
    """A few-shot stream (Avalanche ``CLScenario``): meta-train class sets, then unseen classes.

    The train stream has ``n_experiences`` experiences, each bringing a new,
    disjoint set of meta-training classes (continual meta-learning when > 1;
    classes are dealt to experiences in a random order from ``seed``). The test
    stream holds, when ``eval_seen``, the same class sets (episodes of classes
    seen in meta-training), and last the meta-test experience: classes never
    seen in training. Strategies of :mod:`strategies.meta` train and evaluate
    on N-way K-shot Q-query episodes drawn from each experience.

    Args:
        train: dataset of the meta-training classes (tensor-backed).
        test: dataset of the meta-test classes; default ``train`` (then the class lists split it).
        n_ways: classes per episode.
        k_shots: support samples per class.
        q_queries: query samples per class.
        train_classes: meta-training classes (default: every class of ``train``).
        test_classes: meta-test classes (default: every class of ``test``).
        n_experiences: how many experiences the meta-training classes are dealt into.
        eval_seen: also evaluate on the meta-training class sets.
        test_label_offset: added to ``test``'s labels (and ``test_classes``) first: for two datasets
            that number their classes independently, e.g. Omniglot's background and evaluation sets
            (``scenarios.datasets.omniglot_local(root, background=False)``: ``test_label_offset=964``).
        seed: seed of the class order.

    Raises:
        ValueError: overlapping class splits; an experience with fewer than
            ``n_ways`` classes; a class with fewer than ``k_shots + q_queries`` samples.

    The scenario's ``n_classes`` is ``n_ways`` (the outputs a model needs for an
    episode, which is what the ``kta`` command builds); ``meta_train_classes``,
    ``meta_test_classes``, ``classes_per_experience``, ``n_ways``, ``k_shots``,
    ``q_queries`` and ``unseen_index`` (the test-stream index of the unseen classes) describe the rest.

    Example:
        >>> bg, ev = glyphs()
        >>> bm = few_shot_benchmark(bg, ev, n_ways=5, k_shots=1, q_queries=15)
    """
    from .streams import avalanche_dataset as _av, make_scenario as _scenario

    n_ways = _check_int("n_ways", n_ways, 2)
    k_shots = _check_int("k_shots", k_shots, 1)
    q_queries = _check_int("q_queries", q_queries, 1)
    n_experiences = _check_int("n_experiences", n_experiences, 1)
    same = test is None
    test = train if same else test
    x_tr, y_tr = as_tensors(train)
    x_te, y_te = (x_tr, y_tr) if same else as_tensors(test)
    test_label_offset = _check_int("test_label_offset", test_label_offset, 0)
    if test_label_offset:
        if same:
            raise ValueError("test_label_offset applies only to a separate test dataset")
        y_te = y_te + test_label_offset
        if test_classes is not None:
            test_classes = [int(c) + test_label_offset for c in test_classes]
    if same and (train_classes is None or test_classes is None):
        raise ValueError("with a single dataset, give both train_classes and test_classes (disjoint)")
    train_classes = sorted(set(y_tr.tolist())) if train_classes is None else _class_list("train_classes", train_classes)
    test_classes = sorted(set(y_te.tolist())) if test_classes is None else _class_list("test_classes", test_classes)
    check_disjoint(train_classes, test_classes)
    for name, cl, y in (("train_classes", train_classes, y_tr), ("test_classes", test_classes, y_te)):
        missing = sorted(set(cl) - set(y.tolist()))
        if missing:
            raise ValueError(f"{name}: classes {missing[:20]} are not in the dataset")
    if len(train_classes) < n_experiences * n_ways:
        raise ValueError(
            f"n_experiences={n_experiences} x n_ways={n_ways} needs at least {n_experiences * n_ways} "
            f"meta-training classes, there are {len(train_classes)}"
        )
    if len(test_classes) < n_ways:
        raise ValueError(f"n_ways={n_ways} is larger than the number of test classes ({len(test_classes)})")
    need = k_shots + q_queries
    for name, cl, y in (("train", train_classes, y_tr), ("test", test_classes, y_te)):
        counts = torch.bincount(y, minlength=max(cl) + 1)[cl]
        if int(counts.min()) < need:
            c = cl[int(counts.argmin())]
            raise ValueError(
                f"k_shots + q_queries = {need} is larger than the smallest {name} class "
                f"(class {c} has {int(counts.min())} samples)"
            )
    rng = np.random.default_rng(seed)
    order = [train_classes[i] for i in rng.permutation(len(train_classes))]
    groups = [sorted(g.tolist()) for g in np.array_split(np.array(order), n_experiences)]
    from .datasets import TensorClassificationDataset

    tr_ds = TensorClassificationDataset(x_tr, y_tr)
    te_ds = tr_ds if same else TensorClassificationDataset(x_te, y_te)
    train_exps = [_av(tr_ds, 0, _subset_classes(y_tr, g)) for g in groups]
    test_exps = ([_av(tr_ds, 0, _subset_classes(y_tr, g)) for g in groups] if eval_seen else [])
    test_exps.append(_av(te_ds, 0, _subset_classes(y_te, test_classes)))
    bm = _scenario(
        train_exps, test_exps, kind="few-shot", n_classes=n_ways, input_shape=tuple(x_tr.shape[1:]),
        n_experiences=n_experiences, classes_per_experience=groups, meta_train_classes=sorted(train_classes),
        meta_test_classes=sorted(test_classes), n_ways=n_ways, k_shots=k_shots, q_queries=q_queries,
        unseen_index=len(test_exps) - 1,
    )
    spec = {"n_ways": n_ways, "k_shots": k_shots, "q_queries": q_queries}
    bm.train_stream.episode_spec = dict(spec)
    bm.test_stream.episode_spec = dict(spec)
    return bm


# ---------------------------------------------------------------- named scenarios
def _register():
    from .registry import register_scenario

    @register_scenario("glyphs-5way-1shot")
    def glyphs_5way_1shot(seed: int = 0, n_experiences: int = 1, n_classes: int = 1000, q_queries: int = 15):
        """Generated glyphs, 5-way 1-shot episodes; meta-train on background classes, test on unseen ones."""
        from .datasets import glyphs

        bg, ev = glyphs(n_classes=n_classes)
        return few_shot_benchmark(bg, ev, n_ways=5, k_shots=1, q_queries=q_queries, n_experiences=n_experiences,
                                  seed=seed)

    @register_scenario("glyphs-5way-5shot")
    def glyphs_5way_5shot(seed: int = 0, n_experiences: int = 1, n_classes: int = 1000, q_queries: int = 15):
        """Generated glyphs, 5-way 5-shot episodes; meta-train on background classes, test on unseen ones."""
        from .datasets import glyphs

        bg, ev = glyphs(n_classes=n_classes)
        return few_shot_benchmark(bg, ev, n_ways=5, k_shots=5, q_queries=q_queries, n_experiences=n_experiences,
                                  seed=seed)

    @register_scenario("mnist1d-4way-1shot")
    def mnist1d_4way_1shot(seed: int = 0, q_queries: int = 15):
        """MNIST-1D, 4-way 1-shot episodes: meta-train on classes 0-5 (train split), test on 6-9 (test split)."""
        from .datasets import mnist1d

        train, test = mnist1d()
        return few_shot_benchmark(train, test, n_ways=4, k_shots=1, q_queries=q_queries,
                                  train_classes=range(6), test_classes=range(6, 10), seed=seed)


_register()
