"""Small backbones for the embedded datasets."""
from __future__ import annotations

import math
from typing import Literal, Optional, Sequence, Union

import torch
from avalanche.models import MultiTaskModule
from avalanche.models.base_model import BaseModel
from torch import nn

from scenarios.registry import Registry


def parse_widths(widths, argument: str = "hidden") -> tuple:
    """Layer widths from a sequence of positive integers or a string such as ``"400-400"``."""
    if isinstance(widths, str):
        parts = [p for p in widths.replace(",", "-").split("-") if p.strip()]
        try:
            widths = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{argument} must be widths such as 400-400 or [400,400], got {widths!r}") from None
    if isinstance(widths, (int, bool)) or not hasattr(widths, "__iter__"):
        raise TypeError(f"{argument} must be a sequence of widths such as [400,400], got {widths!r}")
    widths = tuple(widths)
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"{argument} must hold positive integer widths, got {list(widths)!r}")
    return widths


def _check_shape(input_shape, n_classes):
    if not input_shape or any(int(s) < 1 for s in input_shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive sizes, got {input_shape!r}")
    if int(n_classes) < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes!r}")


class _Features(BaseModel):
    """``get_features(x)``: the output of ``features``; with it KTA's models are Avalanche
    ``BaseModel``s, which LFL and other Avalanche methods require."""

    def get_features(self, x):
        return self.features(x)


class MLP(_Features, nn.Module):
    """Flatten -> [Linear -> ReLU] x len(hidden) -> Linear.

    Submodules are named ``features`` (everything before the head) and
    ``classifier`` (the head), the names KTA's plugins use by default.

    Args:
        input_shape: shape of one input, e.g. ``(1, 8, 8)``.
        n_classes: number of outputs.
        hidden: widths of the hidden layers, a sequence or a string ``"400-400"``
            (``()`` or ``""``: a linear model).
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, hidden: Union[Sequence[int], str] = (256,)):
        super().__init__()
        _check_shape(input_shape, n_classes)
        hidden = parse_widths(hidden, "hidden")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, n_classes)
        self.feature_dim = width

    def forward(self, x):
        return self.classifier(self.features(x))


class CNN1d(_Features, nn.Module):
    """The MNIST-1D convolutional baseline (Greydanus 2020): 3 conv layers of 25 channels.

    Args:
        input_shape: ``(channels, length)``, e.g. ``(1, 40)``.
        n_classes: number of outputs.
        channels: channels of each conv layer.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, channels: int = 25):
        super().__init__()
        _check_shape(input_shape, n_classes)
        if len(input_shape) != 2:
            raise ValueError(f"CNN1d needs input_shape (channels, length), got {tuple(input_shape)}")
        c, length = input_shape
        self.features = nn.Sequential(
            nn.Conv1d(c, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            self.feature_dim = self.features(torch.zeros(1, c, length)).shape[1]
        self.classifier = nn.Linear(self.feature_dim, n_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class CNN1dGAP(_Features, nn.Module):
    """A 1-D CNN with BatchNorm and global average pooling: 3 blocks conv-BN-ReLU, then the mean over positions.

    Its features (``features``, width ``channels``) do not depend on where along the
    signal a pattern occurs, and BatchNorm normalises each batch's statistics. On
    MNIST-1D it is the model of the domain-adaptation recipe
    (``examples/domain_adaptation.py``): the alignment losses act on the pooled features.

    Args:
        input_shape: ``(channels, length)``, e.g. ``(1, 40)``.
        n_classes: number of outputs.
        channels: channels of each conv layer (default 32).
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, channels: int = 32):
        super().__init__()
        _check_shape(input_shape, n_classes)
        if len(input_shape) != 2:
            raise ValueError(f"CNN1dGAP needs input_shape (channels, length), got {tuple(input_shape)}")
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv1d(c, channels, 5, padding=2), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )
        self.feature_dim = channels
        self.classifier = nn.Linear(channels, n_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class SmallCNN(_Features, nn.Module):
    """Two conv blocks (conv-BN-ReLU-pool) and a linear head, for small images.

    Args:
        input_shape: ``(channels, height, width)``.
        n_classes: number of outputs.
        channels: channels of the two conv blocks.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, channels: int = 32):
        super().__init__()
        _check_shape(input_shape, n_classes)
        if len(input_shape) != 3:
            raise ValueError(f"SmallCNN needs input_shape (C, H, W), got {tuple(input_shape)}")
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.BatchNorm2d(2 * channels), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.feature_dim = 2 * channels
        self.classifier = nn.Linear(self.feature_dim, n_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def _image_shape(input_shape, who: str):
    if len(input_shape) != 3:
        raise ValueError(f"model {who!r} needs images (channels, height, width); the inputs have shape "
                         f"{tuple(input_shape)}: use mlp, cnn1d or cnn1d-gap for 1-D signals")
    return tuple(int(s) for s in input_shape)


class SlimResNet18(_Features, nn.Module):
    """Avalanche's slimmed ResNet-18 (Lopez-Paz & Ranzato 2017, GEM's reduced ResNet-18: 4 stages of
    2 BasicBlocks, ``nf`` filters in the first stage) for any image size and channel count.

    Avalanche's ``SlimResNet18`` reshapes every input to ``3x32x32`` and pools with a fixed
    ``4x4`` window; this wrapper reuses its blocks, takes ``C`` input channels and pools
    adaptively (the same operation on 32x32 inputs), so it runs on 1x28x28 MNIST and 1x8x8
    digits. Submodules: ``features`` (everything up to the pooled features) and ``classifier``.

    Args:
        input_shape: ``(channels, height, width)``.
        n_classes: number of outputs.
        nf: filters of the first stage (default 20, Avalanche's default).
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, nf: int = 20):
        super().__init__()
        _check_shape(input_shape, n_classes)
        c, _, _ = _image_shape(input_shape, "slim-resnet18")
        if isinstance(nf, bool) or not isinstance(nf, int) or nf < 1:
            raise ValueError(f"nf must be a positive integer, got {nf!r}")
        from avalanche.models.slim_resnet18 import SlimResNet18 as _Slim, conv3x3

        net = _Slim(n_classes, nf=nf)
        conv1 = net.conv1 if c == 3 else conv3x3(c, nf)
        self.features = nn.Sequential(conv1, net.bn1, nn.ReLU(), net.layer1, net.layer2, net.layer3, net.layer4,
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = net.linear
        self.feature_dim = net.linear.in_features

    def forward(self, x):
        return self.classifier(self.features(x))


class _RepeatChannels(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x


class TorchvisionClassifier(_Features, nn.Module):
    """A torchvision classification model (``resnet18`` ...) split into ``features`` and ``classifier``.

    Random initialisation, or the weights of a local checkpoint (a state dict of the same
    architecture, read with ``torch.load(path, weights_only=True)``; see
    :func:`kta_plugins.nn.backbone`). The head is replaced by a new ``nn.Linear`` with
    ``n_classes`` outputs. Grey images (1 channel) are repeated to 3 channels, so a
    checkpoint's first convolution is kept.

    Args:
        input_shape: ``(channels, height, width)``, channels 1 or 3.
        n_classes: number of outputs.
        arch: a torchvision model name (default ``"resnet18"``).
        weights: ``None`` (random init) or the path of a local checkpoint.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, arch: str = "resnet18",
                 weights: Optional[str] = None):
        super().__init__()
        _check_shape(input_shape, n_classes)
        c, _, _ = _image_shape(input_shape, arch)
        if c not in (1, 3):
            raise ValueError(f"model {arch!r} takes 1- or 3-channel images, got {c} channels")
        from .backbones import backbone

        net = backbone(arch, weights=weights, num_classes=n_classes)
        head_path = net.kta_head
        head = net.get_submodule(head_path)
        parent_name, _, attr = head_path.rpartition(".")
        setattr(net.get_submodule(parent_name) if parent_name else net, attr, nn.Identity())
        self.features = nn.Sequential(_RepeatChannels(3), net) if c == 1 else nn.Sequential(net)
        self.classifier = head
        self.feature_dim = head.in_features

    def forward(self, x):
        return self.classifier(self.features(x))


def _resnet18(input_shape: Sequence[int], n_classes: int, weights: Optional[str] = None):
    """torchvision ResNet-18, random init or a local checkpoint (weights=PATH, loaded with weights_only=True)."""
    return TorchvisionClassifier(input_shape, n_classes, arch="resnet18", weights=weights)


class MultiHead(_Features, MultiTaskModule):
    """One output head per task on a shared trunk, for task-incremental streams (Task-IL).

    ``model``'s head (its ``classifier``, an ``nn.Linear(d, C)``) is replaced by
    ``n_tasks`` heads of ``C`` outputs (stored as one ``nn.Linear(d, n_tasks * C)``
    called ``classifier``, so a batch mixing tasks costs one matrix product). A
    sample of task ``t`` gets head ``t``'s logits, with the classes that task ``t``
    does not hold set to ``mask_value``: the model answers among its task's classes
    (van de Ven & Tolias 2019's "multi-headed" output layer), with the stream's
    global labels. Which classes a task holds is given (``task_classes``) or read
    from the training data of each experience.

    Avalanche's ``MultiHeadClassifier`` indexes its masks with
    ``classes_in_this_experience``, a ``set`` in Avalanche 0.6's new-API streams,
    which fails (``IndexError``); this module reads classes as lists and keeps a
    fixed-size mask buffer, so checkpoints load before training.

    Args:
        model: a single-head classifier with ``features`` and ``classifier`` (nn.Linear).
        n_tasks: number of task labels (0 .. n_tasks-1).
        task_classes: optional ``task_classes[t]`` = classes of task ``t``.
        mask_value: logit of the classes outside the sample's task (default -1e4).

    Example:
        >>> net = MultiHead(MLP((1, 28, 28), 10, hidden=(400, 400)), n_tasks=5)
        >>> net(torch.zeros(2, 1, 28, 28), torch.tensor([0, 3])).shape
        torch.Size([2, 10])
    """

    def __init__(self, model: nn.Module, n_tasks: int, task_classes: Optional[Sequence[Sequence[int]]] = None,
                 mask_value: float = -1e4):
        super().__init__()
        head = getattr(model, "classifier", None)
        if not isinstance(head, nn.Linear) or not hasattr(model, "features"):
            raise ValueError(f"model: MultiHead needs a model with `features` and an nn.Linear `classifier`, "
                             f"got {type(model).__name__}")
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
            raise ValueError(f"n_tasks must be a positive integer, got {n_tasks!r}")
        self.n_tasks, self.n_classes = n_tasks, head.out_features
        self.mask_value = float(mask_value)
        self.features = model.features
        self.classifier = nn.Linear(head.in_features, n_tasks * self.n_classes, bias=head.bias is not None)
        self.feature_dim = head.in_features
        self.register_buffer("task_mask", torch.zeros(n_tasks, self.n_classes, dtype=torch.bool))
        if task_classes is not None:
            if len(task_classes) != n_tasks:
                raise ValueError(f"task_classes must list the classes of each of the {n_tasks} tasks, "
                                 f"got {len(task_classes)} entries")
            for t, cls in enumerate(task_classes):
                self._set_classes(t, cls)

    def _set_classes(self, task: int, classes) -> None:
        cls = sorted(int(c) for c in classes)
        if cls and (cls[0] < 0 or cls[-1] >= self.n_classes):
            raise ValueError(f"task {task}: classes {cls} outside 0..{self.n_classes - 1}")
        self.task_mask[task, cls] = True

    def adaptation(self, experience):
        super().adaptation(experience)
        if not self.training:
            return
        ds = experience.dataset
        for t in ds.targets_task_labels.uniques:
            if not 0 <= int(t) < self.n_tasks:
                raise ValueError(f"task label {t} outside 0..{self.n_tasks - 1}: build MultiHead with n_tasks > {t}")
            self._set_classes(int(t), list(ds.task_set[t].targets.uniques))

    def _heads(self, h):
        return self.classifier(h).view(len(h), self.n_tasks, self.n_classes)

    def _masked(self, out, tasks):
        mask = self.task_mask[tasks]  # (batch, classes)
        known = mask.any(dim=1, keepdim=True)  # a task with no known classes yet: no masking
        return out.masked_fill(known & ~mask, self.mask_value)

    def forward_single_task(self, x, task_label: int):
        t = int(task_label)
        if not 0 <= t < self.n_tasks:
            raise ValueError(f"task label {t} outside 0..{self.n_tasks - 1}")
        out = self._heads(self.features(x))[:, t]
        return self._masked(out, torch.full((len(x),), t, dtype=torch.long, device=out.device))

    def forward(self, x, task_labels=None):
        if task_labels is None:
            return self.forward_all_tasks(x)
        if isinstance(task_labels, int):
            return self.forward_single_task(x, task_labels)
        tasks = torch.as_tensor(task_labels, device=x.device).long().flatten()
        if tasks.numel() == 1 and len(x) != 1:
            tasks = tasks.expand(len(x))
        if len(tasks) and (int(tasks.min()) < 0 or int(tasks.max()) >= self.n_tasks):
            raise ValueError(f"task labels must be in 0..{self.n_tasks - 1}, got {sorted(set(tasks.tolist()))}")
        out = self._heads(self.features(x))[torch.arange(len(x), device=x.device), tasks]
        return self._masked(out, tasks)


#: Models by command-line name: ``kta run --model NAME[:key=value,...]`` (e.g. ``mlp:hidden=400-400``).
#: Every factory takes ``(input_shape, n_classes, **options)``.
MODELS = Registry("model")
MODELS.register("mlp", MLP, help="Flatten -> [Linear -> ReLU] x hidden -> Linear; hidden=400-400 for two layers of 400")
MODELS.register("cnn", SmallCNN, help="two conv-BN-ReLU blocks and a linear head, for small images")
MODELS.register("cnn1d", CNN1d, help="the MNIST-1D convolutional baseline (3 conv layers), for 1-D signals")
MODELS.register("cnn1d-gap", CNN1dGAP, help="1-D CNN with BatchNorm and global average pooling")
MODELS.register("slim-resnet18", SlimResNet18, help="Avalanche's slimmed ResNet-18 (nf=20), any image size")
MODELS.register("resnet18", _resnet18, help="torchvision ResNet-18, random init or weights=PATH (a local checkpoint)")

HEADS = ("auto", "single", "multi")


def make_model(name: str, input_shape: Sequence[int], n_classes: int, **kwargs) -> nn.Module:
    """Build a model of :data:`MODELS` by name or spec (``"mlp:hidden=400-400"``); ``kwargs`` add options."""
    from scenarios.registry import RegistryError, parse_spec

    try:
        key, raw = parse_spec(name)
        options = {**kwargs, **MODELS.parse_kwargs(key, raw)}
        factory = MODELS.get(key)
    except RegistryError as e:
        raise ValueError(str(e)) from None
    return factory(input_shape, n_classes, **options)


def default_model_name(input_shape: Sequence[int]) -> str:
    """``cnn1d`` for 1-D signals, ``mlp`` otherwise (small images train fast and well with an MLP)."""
    return "cnn1d" if len(input_shape) == 2 else "mlp"


def task_identity(benchmark) -> bool:
    """True when ``benchmark`` gives task identity (task-incremental: each experience its own task label)."""
    return getattr(benchmark, "kind", None) == "task-incremental"


def build_model(spec: Optional[str], benchmark, heads: Literal["auto", "single", "multi"] = "auto") -> nn.Module:
    """The model ``--model`` asks for, sized and checked for ``benchmark`` before any training.

    ``spec`` is ``NAME[:key=value,...]`` of :data:`MODELS` (``None``: ``cnn1d`` for 1-D
    signals, else ``mlp``) plus one option every model takes, ``heads``:

    * ``auto`` (default): one head per task (:class:`MultiHead`) on task-incremental
      streams, one shared head elsewhere;
    * ``single``: one shared head; refused on task-incremental streams, whose
      tasks need their own heads (van de Ven & Tolias 2019's Task-IL);
    * ``multi``: one head per task; refused on streams without task labels.

    Errors are ``ValueError`` naming ``model`` (``kta`` reports them as ``--model``).

    Example:
        >>> bm = SCENARIOS.build("split-mnist-tasks")
        >>> net = build_model("mlp:hidden=400-400", bm)   # a MultiHead with 5 heads
    """
    from scenarios.registry import RegistryError, parse_spec

    input_shape, n_classes = tuple(benchmark.input_shape), int(benchmark.n_classes)
    spec = spec or default_model_name(input_shape)
    try:
        name, raw = parse_spec(spec)
    except RegistryError as e:
        raise ValueError(f"model: {e}") from None
    heads = raw.pop("heads", heads)
    if heads not in HEADS:
        raise ValueError(f"model {name!r}: heads must be one of {list(HEADS)}, got {heads!r}")
    if name not in MODELS:
        raise ValueError(f"model: unknown model {name!r}; known: {', '.join(MODELS.names())}")
    tasks = task_identity(benchmark)
    if heads == "single" and tasks:
        raise ValueError(
            f"model {name!r} with heads=single shares one head between tasks, but this "
            f"{benchmark.kind} stream gives each experience its own task: use heads=multi or heads=auto")
    if heads == "multi" and not tasks:
        raise ValueError(f"model {name!r} with heads=multi needs a task-incremental stream; this one is "
                         f"{getattr(benchmark, 'kind', 'without task labels')}: use heads=single or heads=auto")
    try:
        options = MODELS.parse_kwargs(name, raw)
        net = MODELS.get(name)(input_shape, n_classes, **options)
    except RegistryError as e:
        raise ValueError(str(e)) from None
    except (ValueError, TypeError) as e:
        msg = str(e)
        raise type(e)(msg if "model" in msg else f"model {name!r}: {msg}") from None
    if tasks:
        groups = getattr(benchmark, "classes_per_experience", None)
        n_tasks = int(getattr(benchmark, "n_experiences", len(benchmark.train_stream)))
        net = MultiHead(net, n_tasks=n_tasks, task_classes=groups if groups and len(groups) == n_tasks else None)
    net.kta_input_shape = input_shape  # for strategies that build their own modules (generative replay, PNN)
    return net
