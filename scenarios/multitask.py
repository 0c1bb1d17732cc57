"""Multi-task data: several targets per sample (classification and regression), as streams.

* :class:`MultiTaskDataset`: a ``TensorDataset`` ``(x, target_1, ..., target_K)``
  that knows its tasks (``tasks = {"points": 5, "size": "regression"}``: an
  integer is a classification task with that many classes, ``"regression"`` a
  scalar regression task). Avalanche reads ``targets`` (the first
  classification target) for its class timeline; a minibatch is
  ``[x, target_1, ..., target_K, task_label]``.
* :func:`stars`: procedural images of stars; classify the number of points,
  regress the size (outer radius).
* :func:`multitask_mnist1d`: MNIST-1D (Greydanus 2020) with the digit and one
  or more generator quantities (``scale``: amplitude scale, ``shear``,
  ``translation``, ``padding``) as regression targets, generated with the
  ``mnist1d`` package's own transforms and random draws (the signals equal
  ``mnist1d``'s).
* :func:`multitask_stream`: a stream of multi-task experiences (one joint
  experience, random splits, or splits by the classes of the first
  classification task).

Registered scenarios: ``stars`` and ``multitask-mnist1d``.

Example:
    >>> bm = multitask_stream(stars(seed=0), n_experiences=1)
    >>> bm.tasks
    {'points': 5, 'size': 'regression'}
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .registry import register_scenario

__all__ = ["MultiTaskDataset", "stars", "multitask_mnist1d", "multitask_stream", "find_tasks", "check_tasks",
           "MNIST1D_QUANTITIES"]


def check_tasks(tasks, argument: str = "tasks") -> dict:
    """Validate a task spec ``{name: n_classes (int >= 2) or "regression"}``; returns an ordered copy."""
    if not isinstance(tasks, dict) or not tasks:
        raise TypeError(f"{argument} must be a non-empty dict {{name: n_classes or 'regression'}}, got {tasks!r}")
    out = {}
    for name, spec in tasks.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{argument}: task names must be non-empty strings, got {name!r}")
        if spec == "regression":
            out[name] = "regression"
        elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) and spec >= 2:
            out[name] = int(spec)
        else:
            raise ValueError(f"{argument}[{name!r}] must be a number of classes (>= 2) or 'regression', got {spec!r}")
    return out


class MultiTaskDataset(TensorDataset):
    """``(x, target_1, ..., target_K)`` with one target per task.

    Args:
        x: inputs, first dimension = samples.
        targets: ``{task name: tensor (n,)}`` in task order; long tensors for
            classification, float for regression.
        tasks: ``{task name: n_classes or "regression"}`` (same names and order).
    """

    def __init__(self, x: torch.Tensor, targets: dict, tasks: dict):
        tasks = check_tasks(tasks)
        if not isinstance(targets, dict) or list(targets) != list(tasks):
            raise ValueError(f"targets must be a dict with the task names in order {list(tasks)}, "
                             f"got {list(targets) if isinstance(targets, dict) else type(targets).__name__}")
        tensors = []
        for name, spec in tasks.items():
            t = torch.as_tensor(targets[name])
            t = t.long() if spec != "regression" else t.float()
            if t.ndim != 1 or len(t) != len(x):
                raise ValueError(f"targets[{name!r}] must have shape ({len(x)},), got {tuple(t.shape)}")
            tensors.append(t)
        super().__init__(torch.as_tensor(x), *tensors)
        self.tasks = tasks
        cls = [i for i, s in enumerate(tasks.values()) if s != "regression"]
        # Avalanche's class timeline needs integer labels: the first classification task's, else zeros.
        self.targets = tensors[cls[0]] if cls else torch.zeros(len(x), dtype=torch.long)

    @property
    def x(self) -> torch.Tensor:
        return self.tensors[0]

    def target(self, name: str) -> torch.Tensor:
        if name not in self.tasks:
            raise KeyError(f"no task {name!r}; tasks: {list(self.tasks)}")
        return self.tensors[1 + list(self.tasks).index(name)]

    def subset(self, idx) -> "MultiTaskDataset":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return MultiTaskDataset(self.x[idx], {n: self.target(n)[idx] for n in self.tasks}, self.tasks)

    def __repr__(self) -> str:
        return f"MultiTaskDataset(n={len(self)}, x={tuple(self.x.shape[1:])}, tasks={self.tasks})"


def find_tasks(dataset) -> Optional[dict]:
    """The ``tasks`` of the :class:`MultiTaskDataset` under an Avalanche dataset, or ``None``."""
    seen = 0
    stack = [dataset]
    while stack and seen < 10000:
        node = stack.pop()
        seen += 1
        tasks = getattr(node, "tasks", None)
        if isinstance(node, MultiTaskDataset) and isinstance(tasks, dict):
            return dict(tasks)
        flat = getattr(node, "_flat_data", None)
        if flat is not None and flat is not node:
            stack.append(flat)
        for child in getattr(node, "_datasets", None) or []:
            stack.append(child)
    return None


# ------------------------------------------------------------------ stars
def _render_stars(n_points, radius, inner_ratio, rotation, cx, cy, image_size, noise, rng):
    """Soft-edged star polygons: the boundary radius goes linearly (in angle) from the outer
    radius at each point to ``inner_ratio * radius`` half-way between points."""
    ys, xs = np.mgrid[0:image_size, 0:image_size].astype(np.float32) + 0.5
    dx = xs[None] - cx[:, None, None]
    dy = ys[None] - cy[:, None, None]
    d = np.sqrt(dx ** 2 + dy ** 2)
    theta = np.arctan2(dy, dx) - rotation[:, None, None]
    period = 2 * np.pi / n_points[:, None, None]
    phase = np.mod(theta, period) / period  # 0 at a point, 0.5 between two points
    r_out = radius[:, None, None]
    r_in = r_out * inner_ratio[:, None, None]
    boundary = r_out - (r_out - r_in) * (1 - np.abs(2 * phase - 1))
    img = 1.0 / (1.0 + np.exp(-(boundary - d) / 0.35))
    img = img + noise * rng.standard_normal(img.shape)
    return img.astype(np.float32)


def stars(n_train: int = 3000, n_test: int = 1000, image_size: int = 16, min_points: int = 3,
          max_points: int = 7, min_radius: float = 3.0, max_radius: float = 7.0, noise: float = 0.1,
          seed: int = 0):
    """Procedural images of stars: classify the number of points, regress the size.

    Each image (``1 x image_size x image_size``) shows one star with ``k``
    points (``min_points..max_points``, uniform), outer radius ``R`` (uniform
    in ``[min_radius, max_radius]`` pixels), a random inner-radius ratio
    (0.35-0.6), rotation and centre jitter, plus Gaussian pixel noise.

    Targets: ``points`` = ``k - min_points`` (classification),
    ``size`` = ``R`` standardised to ``(R - mid) / half_range`` in ``[-1, 1]`` (regression).

    Returns ``(train, test)`` :class:`MultiTaskDataset`.
    """
    for name, v in (("n_train", n_train), ("n_test", n_test), ("image_size", image_size),
                    ("min_points", min_points), ("max_points", max_points)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if min_points < 2 or max_points <= min_points:
        raise ValueError(f"min_points must be >= 2 and max_points > min_points, got {min_points}, {max_points}")
    if not (0 < min_radius < max_radius <= image_size / 2):
        raise ValueError(f"min_radius and max_radius must satisfy 0 < min_radius < max_radius <= image_size/2, "
                         f"got {min_radius}, {max_radius}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    k = rng.integers(min_points, max_points + 1, size=n)
    radius = rng.uniform(min_radius, max_radius, size=n)
    inner = rng.uniform(0.35, 0.6, size=n)
    rot = rng.uniform(0, 2 * np.pi, size=n)
    slack = np.maximum(image_size / 2 - radius, 0) * 0.5
    cx = image_size / 2 + rng.uniform(-1, 1, size=n) * slack
    cy = image_size / 2 + rng.uniform(-1, 1, size=n) * slack
    img = _render_stars(k, radius, inner, rot, cx, cy, image_size, noise, rng)
    x = torch.from_numpy(img).unsqueeze(1)
    mid, half = (min_radius + max_radius) / 2, (max_radius - min_radius) / 2
    tasks = {"points": max_points - min_points + 1, "size": "regression"}
    points = torch.from_numpy(k - min_points).long()
    size = torch.from_numpy((radius - mid) / half).float()

    def part(sl):
        return MultiTaskDataset(x[sl], {"points": points[sl], "size": size[sl]}, tasks)

    return part(slice(0, n_train)), part(slice(n_train, n))


# ------------------------------------------------------------------ MNIST-1D
MNIST1D_QUANTITIES = ("scale", "shear", "translation", "padding")


def _mnist1d_with_quantities(args) -> dict:
    """``mnist1d.data.make_dataset`` with the per-sample random draws of its transforms recorded.

    The random calls are made in the same order as ``mnist1d.transform.transform``,
    so ``x`` and ``y`` equal the package's dataset for the same arguments.
    """
    from mnist1d.data import get_templates
    from mnist1d.transform import corr_noise_like, interpolate, iid_noise_like
    from mnist1d.utils import set_seed

    templates = get_templates()
    set_seed(args.seed)
    xs, ys, q = [], [], {k: [] for k in MNIST1D_QUANTITIES}
    per_class = args.num_samples // len(templates["y"])
    for label in range(len(templates["y"])):
        for _ in range(per_class):
            x = templates["x"][label] + 1e-8
            low, high = args.padding
            p = low + int(np.random.rand() * (high - low + 1))  # pad
            x = np.concatenate([x, np.zeros((p,))])
            x = interpolate(x, args.template_len + args.padding[-1])
            s = 1 + args.scale_coeff * (np.random.rand() - 0.5)  # scale
            x = x * s
            k = np.random.choice(args.max_translation)  # translate
            x = np.concatenate([x[-k:], x[:-k]])
            mask = x != 0
            x = mask * x + (1 - mask) * corr_noise_like(x, args.corr_noise_scale)
            x = x + iid_noise_like(x, args.iid_noise_scale)
            coeff = args.shear_scale * (np.random.rand() - 0.5)  # shear
            x = x - coeff * np.linspace(-0.5, 0.5, len(x))
            x = interpolate(x, args.final_seq_length)
            xs.append(x)
            ys.append(templates["y"][label])
            for key, v in (("scale", s), ("shear", coeff), ("translation", k), ("padding", p)):
                q[key].append(float(v))
    order = np.random.permutation(len(ys))
    xs = np.stack(xs)[order]
    ys = np.stack(ys)[order]
    q = {k: np.asarray(v)[order] for k, v in q.items()}
    if args.shuffle_seq:
        xs = xs[..., np.random.permutation(args.final_seq_length)]
    xs = (xs - xs.mean()) / xs.std()
    split = int(len(ys) * args.train_split)
    out = {"x": xs[:split], "x_test": xs[split:], "y": ys[:split], "y_test": ys[split:]}
    for k, v in q.items():
        out[f"q_{k}"], out[f"q_{k}_test"] = v[:split], v[split:]
    return out


def multitask_mnist1d(quantity: Union[str, Sequence[str]] = "scale", **generator_args):
    """MNIST-1D with the tasks ``digit`` (10 classes) and one regression task per ``quantity``.

    Args:
        quantity: the generator's per-sample random draw(s) to regress: ``scale``
            (amplitude scale, default), ``shear``, ``translation``, ``padding``;
            several as a sequence or joined by ``+`` (``"scale+shear+translation"``).
            Each target is standardised with the training set's mean and std.
        **generator_args: MNIST-1D generator arguments (``seed``, ``shear_scale``...).

    Returns ``(train, test)`` :class:`MultiTaskDataset` with inputs ``(1, 40)``
    and tasks ``{"digit": 10, quantity: "regression", ...}``. Cached like
    :func:`scenarios.datasets.mnist1d`.
    """
    from mnist1d.utils import ObjectView

    from .datasets.embedded import atomic_savez as _atomic_savez, cache_dir, mnist1d_args

    quantities = quantity.split("+") if isinstance(quantity, str) else list(quantity) \
        if isinstance(quantity, (list, tuple)) else None
    if not quantities or any(q not in MNIST1D_QUANTITIES for q in quantities) or \
            len(set(quantities)) != len(quantities):
        raise ValueError(f"quantity must be one or more distinct names of {list(MNIST1D_QUANTITIES)} "
                         f"(a sequence or joined by '+'), got {quantity!r}")
    args = mnist1d_args(**generator_args)
    key = hashlib.sha1(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-mtl-{key}.npz"
    data = None
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except Exception:
            path.unlink(missing_ok=True)
    if data is None:
        data = _mnist1d_with_quantities(ObjectView(args))
        _atomic_savez(data, path)
    stats = {q: (float(data[f"q_{q}"].mean()), float(data[f"q_{q}"].std()) or 1.0) for q in quantities}
    tasks = {"digit": 10, **{q: "regression" for q in quantities}}

    def make(x, y, suffix):
        targets = {"digit": torch.as_tensor(np.asarray(y)).long()}
        for q, (mean, std) in stats.items():
            targets[q] = torch.tensor((data[f"q_{q}{suffix}"] - mean) / std, dtype=torch.float32)
        return MultiTaskDataset(torch.tensor(np.asarray(x), dtype=torch.float32).unsqueeze(1), targets, tasks)

    return make(data["x"], data["y"], ""), make(data["x_test"], data["y_test"], "_test")


# ------------------------------------------------------------------ streams
def multitask_stream(dataset, n_experiences: int = 1, split: Literal["random", "classes"] = "random",
                     seed: int = 0):
    """A stream of multi-task experiences (Avalanche ``CLScenario``).

    Args:
        dataset: a ``(train, test)`` pair of :class:`MultiTaskDataset`.
        n_experiences: number of experiences (1: one joint experience).
        split: ``"random"`` (each experience a random, disjoint share of the
            data, same distribution) or ``"classes"`` (split by the classes of
            the first classification task, as in a class-incremental stream).
        seed: seed of the split.

    The scenario has ``tasks``, ``n_classes`` (of the first classification
    task), ``input_shape``, ``n_experiences`` and ``kind="multi-task"``.
    """
    from .streams import avalanche_dataset as _av, make_scenario as _scenario

    if not (isinstance(dataset, (tuple, list)) and len(dataset) == 2
            and all(isinstance(d, MultiTaskDataset) for d in dataset)):
        raise TypeError("dataset must be a (train, test) pair of MultiTaskDataset")
    if isinstance(n_experiences, bool) or not isinstance(n_experiences, int) or n_experiences < 1:
        raise ValueError(f"n_experiences must be a positive integer, got {n_experiences!r}")
    if split not in ("random", "classes"):
        raise ValueError(f"split must be 'random' or 'classes', got {split!r}")
    train, test = dataset
    if list(train.tasks.items()) != list(test.tasks.items()):
        raise ValueError(f"train and test tasks differ: {train.tasks} vs {test.tasks}")
    rng = np.random.default_rng(seed)
    if split == "random":
        def parts(ds):
            chunks = np.array_split(rng.permutation(len(ds)), n_experiences)
            return [np.sort(c) for c in chunks]
        tr_idx, te_idx = parts(train), parts(test)
        groups = None
    else:
        classes = sorted(set(train.targets.tolist()))
        if len(classes) % n_experiences:
            raise ValueError(f"n_experiences={n_experiences} does not divide the {len(classes)} classes "
                             f"of the first classification task")
        order = [classes[i] for i in rng.permutation(len(classes))]
        per = len(classes) // n_experiences
        groups = [sorted(order[i * per:(i + 1) * per]) for i in range(n_experiences)]
        tr_idx = [np.flatnonzero(np.isin(train.targets.numpy(), g)) for g in groups]
        te_idx = [np.flatnonzero(np.isin(test.targets.numpy(), g)) for g in groups]
    tr = [_av(train.subset(i), 0) for i in tr_idx]
    te = [_av(test.subset(i), 0) for i in te_idx]
    classes = sorted(set(train.targets.tolist()))
    return _scenario(tr, te, kind="multi-task", tasks=dict(train.tasks), n_classes=len(classes),
                     input_shape=tuple(train.x.shape[1:]), n_experiences=n_experiences,
                     classes_per_experience=groups)


@register_scenario("stars")
def stars_scenario(n_experiences: int = 1, split: Literal["random", "classes"] = "random", seed: int = 0):
    """Images of stars: number of points (5 classes) + size (regression); multi-task."""
    return multitask_stream(stars(seed=seed), n_experiences=n_experiences, split=split, seed=seed)


@register_scenario("multitask-mnist1d")
def multitask_mnist1d_scenario(quantity: str = "scale", n_experiences: int = 1,
                               split: Literal["random", "classes"] = "random", seed: int = 0):
    """MNIST-1D: digit (10 classes) + generator quantities (default amplitude scale; several joined by '+',
    e.g. quantity=scale+shear+translation; regression); multi-task."""
    return multitask_stream(multitask_mnist1d(quantity=quantity), n_experiences=n_experiences, split=split,
                            seed=seed)
