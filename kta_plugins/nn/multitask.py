"""Multi-task architectures: every model maps an input to ``{task name: output}``.

Tasks are given as ``{name: n_classes (int >= 2) or "regression"}`` (see
:func:`scenarios.multitask.check_tasks`); a classification head outputs
``n_classes`` logits, a regression head one value (shape ``(batch,)``).

* :class:`HardSharing` (M1): one shared trunk (``features``) and named heads
  (``heads``), any mix of classification and regression.
* :class:`SoftSharing` (M2): one tower per task (``towers``), tied by an L2
  penalty between corresponding weights (plugin ``soft-sharing``).
* :class:`CrossStitch` (M3, Misra et al. 2016): one column per task, mixed after
  every hidden layer by a learned ``K x K`` cross-stitch matrix.
* :class:`MMoE` (M4, Ma et al. 2018): shared experts, one softmax gate and one
  tower per task.
* :class:`QuantileHead`: a regression head that predicts several quantiles of
  its target (``quantiles={"size": (0.1, 0.5, 0.9)}`` on any model above;
  trained with the pinball loss of :mod:`kta_plugins.mtl.quantile`).

Import by full path: ``from kta_plugins.nn.multitask import HardSharing``.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from scenarios.multitask import check_tasks

__all__ = ["HardSharing", "SoftSharing", "CrossStitch", "CrossStitchUnit", "MMoE", "QuantileHead", "task_heads",
           "mlp_trunk", "task_output_dim", "check_quantiles", "resolve_quantiles", "model_quantiles"]


def task_output_dim(spec) -> int:
    return 1 if spec == "regression" else int(spec)


def _flat_dim(input_shape) -> int:
    if not input_shape or any(int(s) < 1 for s in input_shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive sizes, got {input_shape!r}")
    return math.prod(int(s) for s in input_shape)


def mlp_trunk(input_shape: Sequence[int], hidden: Sequence[int]) -> nn.Sequential:
    """Flatten -> [Linear -> ReLU] x len(hidden)."""
    if not hidden:
        raise ValueError("hidden must list at least one width")
    layers: list[nn.Module] = [nn.Flatten()]
    width = _flat_dim(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    return nn.Sequential(*layers)


class _Head(nn.Module):
    """A linear head; regression heads return shape ``(batch,)``."""

    def __init__(self, in_dim: int, spec):
        super().__init__()
        self.regression = spec == "regression"
        self.linear = nn.Linear(in_dim, task_output_dim(spec))

    def forward(self, h):
        out = self.linear(h)
        return out.squeeze(-1) if self.regression else out


def check_quantiles(levels, argument: str = "quantiles") -> tuple:
    """Quantile levels: a non-empty, strictly increasing sequence of numbers in (0, 1); returns a tuple."""
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise TypeError(f"{argument} must be a sequence of quantile levels in (0, 1), got {levels!r}")
    out = []
    for v in levels:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or not 0 < v < 1:
            raise ValueError(f"{argument}: every quantile level must be a number in (0, 1), got {v!r}")
        out.append(float(v))
    if not out:
        raise ValueError(f"{argument} must list at least one quantile level")
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{argument} must be strictly increasing, got {out}")
    return tuple(out)


def resolve_quantiles(quantiles, tasks: dict, argument: str = "quantiles") -> dict:
    """``{task: levels}`` for regression tasks: ``quantiles`` is ``None`` (no quantile task), a
    sequence of levels (every regression task) or a dict ``{task: levels}``."""
    tasks = check_tasks(tasks)
    if quantiles is None:
        return {}
    regression = [n for n, s in tasks.items() if s == "regression"]
    if isinstance(quantiles, dict):
        bad = [n for n in quantiles if n not in regression]
        if bad:
            raise ValueError(f"{argument}: {bad} are not regression tasks; regression tasks: {regression}")
        return {n: check_quantiles(quantiles[n], f"{argument}[{n!r}]") for n in regression if n in quantiles}
    levels = check_quantiles(quantiles, argument)
    if not regression:
        raise ValueError(f"{argument}: there is no regression task to predict quantiles of; tasks: {tasks}")
    return {n: levels for n in regression}


class QuantileHead(nn.Module):
    """A linear head predicting ``Q`` quantiles of a scalar target; output ``(batch, Q)``.

    With ``monotone=True`` (default) the quantiles cannot cross: the head
    outputs ``q_1 = a_1`` and ``q_k = a_1 + sum_{l=2..k} softplus(a_l)`` from
    the linear outputs ``a``. With ``monotone=False`` the ``Q`` linear outputs
    are the quantiles themselves (they may cross; the ``MultiTask`` strategy
    reports the crossing rate).

    Args:
        in_dim: input width.
        quantiles: increasing levels in (0, 1), e.g. ``(0.1, 0.5, 0.9)``.
        monotone: enforce non-crossing quantiles.

    Example:
        >>> head = QuantileHead(64, (0.1, 0.5, 0.9))
        >>> head(torch.randn(8, 64)).shape
        torch.Size([8, 3])
    """

    def __init__(self, in_dim: int, quantiles: Sequence[float] = (0.1, 0.5, 0.9), monotone: bool = True):
        super().__init__()
        self.quantiles = check_quantiles(quantiles)
        if not isinstance(monotone, bool):
            raise TypeError(f"monotone must be bool, got {type(monotone).__name__} {monotone!r}")
        self.monotone = monotone
        self.linear = nn.Linear(in_dim, len(self.quantiles))

    def forward(self, h):
        a = self.linear(h)
        if not self.monotone or a.shape[-1] == 1:
            return a
        return torch.cat([a[..., :1], a[..., :1] + torch.cumsum(nn.functional.softplus(a[..., 1:]), -1)], -1)


def _out_dim(module: nn.Module, input_shape) -> int:
    with torch.no_grad():
        return int(module(torch.zeros(1, *input_shape)).flatten(1).shape[1])


def task_heads(tasks: dict, in_dim: int, quantiles: Optional[dict] = None, monotone: bool = True) -> nn.ModuleDict:
    """One linear head per task (``n_classes`` logits, or one value for regression); a
    :class:`QuantileHead` for the regression tasks in ``quantiles`` (see :func:`resolve_quantiles`)."""
    tasks = check_tasks(tasks)
    quantiles = resolve_quantiles(quantiles, tasks)
    return nn.ModuleDict({name: QuantileHead(in_dim, quantiles[name], monotone) if name in quantiles
                          else _Head(in_dim, spec) for name, spec in tasks.items()})


def model_quantiles(model: nn.Module) -> dict:
    """``{task: levels}`` of the model's :class:`QuantileHead` heads (``model.heads``)."""
    heads = getattr(model, "heads", None)
    if not isinstance(heads, nn.ModuleDict):
        return {}
    return {n: h.quantiles for n, h in heads.items() if isinstance(h, QuantileHead)}


class HardSharing(nn.Module):
    """Hard parameter sharing: a shared trunk ``features`` and one head per task in ``heads``.

    Args:
        tasks: ``{name: n_classes or "regression"}``.
        input_shape: shape of one input; builds an MLP trunk with ``hidden``
            widths when ``trunk`` is not given.
        hidden: widths of the MLP trunk (default ``(128, 64)``).
        trunk: any module mapping inputs to ``(batch, feature_dim)`` features
            (e.g. a backbone's ``features``).
        feature_dim: the trunk's output width (found with a dummy forward if omitted).
        quantiles: quantile heads (:class:`QuantileHead`) for regression tasks:
            levels for every regression task, or ``{task: levels}``.
        monotone: non-crossing quantile heads (default True).

    Example:
        >>> net = HardSharing({"points": 5, "size": "regression"}, input_shape=(1, 16, 16))
        >>> out = net(x)            # {"points": (B, 5) logits, "size": (B,) values}
        >>> net = HardSharing(tasks, input_shape=(1, 16, 16), quantiles=(0.1, 0.5, 0.9))  # "size": (B, 3)
    """

    def __init__(self, tasks: dict, input_shape: Optional[Sequence[int]] = None,
                 hidden: Sequence[int] = (128, 64), trunk: Optional[nn.Module] = None,
                 feature_dim: Optional[int] = None, quantiles=None, monotone: bool = True):
        super().__init__()
        self.tasks = check_tasks(tasks)
        if trunk is None:
            if input_shape is None:
                raise ValueError("input_shape is required when no trunk is given")
            trunk = mlp_trunk(input_shape, hidden)
            feature_dim = int(hidden[-1])
        if feature_dim is None:
            if input_shape is None:
                raise ValueError("feature_dim (or input_shape) is required with a custom trunk")
            with torch.no_grad():
                feature_dim = int(trunk(torch.zeros(1, *input_shape)).flatten(1).shape[1])
        self.features = trunk
        self.feature_dim = int(feature_dim)
        self.heads = task_heads(self.tasks, self.feature_dim, quantiles, monotone)

    @property
    def quantiles(self) -> dict:
        return model_quantiles(self)

    @classmethod
    def from_backbone(cls, model: nn.Module, tasks: dict, quantiles=None, monotone: bool = True) -> "HardSharing":
        """Reuse a KTA backbone's ``features`` (and ``feature_dim``) as the shared trunk."""
        if not isinstance(getattr(model, "features", None), nn.Module) or not hasattr(model, "feature_dim"):
            raise ValueError(f"model {type(model).__name__} needs `features` and `feature_dim` to become "
                             "a hard-sharing multi-task model; build a kta_plugins.nn.multitask model instead")
        return cls(tasks, trunk=model.features, feature_dim=model.feature_dim, quantiles=quantiles,
                   monotone=monotone)

    def forward(self, x):
        h = self.features(x)
        return {name: head(h) for name, head in self.heads.items()}


class SoftSharing(nn.Module):
    """Soft parameter sharing: one MLP tower per task (``towers``), identical architectures.

    Nothing is shared in the forward pass; the ``soft-sharing`` plugin
    (:class:`kta_plugins.mtl.soft_sharing.SoftSharingPenalty`) ties the towers
    with ``strength * sum_{a<b} ||theta_a - theta_b||^2``.

    Args:
        tasks: ``{name: n_classes or "regression"}``.
        input_shape: shape of one input.
        hidden: widths of each tower (default ``(128, 64)``).
        tower_factory: a zero-argument callable building one tower (any module
            mapping inputs to ``(batch, d)``, e.g. ``lambda: CNN1d((1, 40), 1).features``);
            replaces the MLP towers.
        quantiles: quantile levels of the regression heads, as in :class:`HardSharing`.
        monotone: non-crossing quantile heads, as in :class:`HardSharing`.
    """

    def __init__(self, tasks: dict, input_shape: Sequence[int], hidden: Sequence[int] = (128, 64),
                 tower_factory: Optional[Callable[[], nn.Module]] = None, quantiles=None, monotone: bool = True):
        super().__init__()
        self.tasks = check_tasks(tasks)
        make = tower_factory or (lambda: mlp_trunk(input_shape, hidden))
        self.towers = nn.ModuleDict({n: make() for n in self.tasks})
        d = _out_dim(next(iter(self.towers.values())), input_shape)
        self.heads = task_heads(self.tasks, d, quantiles, monotone)

    quantiles = HardSharing.quantiles

    def forward(self, x):
        return {n: self.heads[n](self.towers[n](x)) for n in self.tasks}


class CrossStitchUnit(nn.Module):
    """Cross-stitch unit (Misra et al. 2016): ``x'_i = sum_j alpha_ij x_j`` for K task activations.

    Args:
        n_tasks: K.
        self_weight: initial ``alpha_ii`` (1.0 = identity: separate networks).
        other_weight: initial ``alpha_ij`` for ``i != j`` (default ``1 - self_weight``
            spread over the others; the paper uses 0.9 / 0.1 for two tasks).
    """

    def __init__(self, n_tasks: int, self_weight: float = 0.9, other_weight: Optional[float] = None):
        super().__init__()
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
        if other_weight is None:
            other_weight = (1 - self_weight) / max(n_tasks - 1, 1)
        alpha = torch.full((n_tasks, n_tasks), float(other_weight))
        alpha.fill_diagonal_(float(self_weight))
        self.alpha = nn.Parameter(alpha)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(xs) != self.alpha.shape[0]:
            raise ValueError(f"cross-stitch unit for {self.alpha.shape[0]} tasks got {len(xs)} activations")
        stacked = torch.stack(list(xs), 0)  # (K, B, ...)
        mixed = torch.einsum("ij,j...->i...", self.alpha, stacked)
        return list(mixed.unbind(0))


class CrossStitch(nn.Module):
    """Cross-stitch network (Misra et al. 2016): one column per task, a cross-stitch unit
    after every block.

    Column ``i``, block ``l``: ``h_i^l = block_i^l(x_i^{l-1})``, then
    ``x_i^l = sum_j alpha^l_ij h_j^l``. With ``self_weight=1`` (identity
    units) the columns are independent networks. Default blocks:
    ``Linear -> ReLU`` of widths ``hidden`` (after flattening).

    Args:
        tasks: ``{name: n_classes or "regression"}``.
        input_shape: shape of one input.
        hidden: widths of each MLP column (default ``(128, 64)``).
        self_weight: initial diagonal of the units (default 0.9, as the paper).
        column_factory: a zero-argument callable returning one column as a list
            of blocks (e.g. conv blocks; the last one's output is flattened for
            the heads); replaces the MLP columns.
        quantiles: quantile levels of the regression heads, as in :class:`HardSharing`.
        monotone: non-crossing quantile heads, as in :class:`HardSharing`.
    """

    def __init__(self, tasks: dict, input_shape: Sequence[int], hidden: Sequence[int] = (128, 64),
                 self_weight: float = 0.9, column_factory: Optional[Callable[[], Sequence[nn.Module]]] = None,
                 quantiles=None, monotone: bool = True):
        super().__init__()
        self.tasks = check_tasks(tasks)
        names = list(self.tasks)

        def mlp_column():
            blocks, w = [nn.Flatten()], _flat_dim(input_shape)
            for h in hidden:
                blocks.append(nn.Sequential(nn.Linear(w, int(h)), nn.ReLU()))
                w = int(h)
            return blocks

        make = column_factory or mlp_column
        self.columns = nn.ModuleDict({n: nn.ModuleList(make()) for n in names})
        n_blocks = len(self.columns[names[0]])
        if any(len(c) != n_blocks for c in self.columns.values()):
            raise ValueError("column_factory must return the same number of blocks for every column")
        # a stitch after every block that has parameters
        self.stitched = [i for i, b in enumerate(self.columns[names[0]]) if any(True for _ in b.parameters())]
        self.stitches = nn.ModuleList(CrossStitchUnit(len(names), self_weight) for _ in self.stitched)
        with torch.no_grad():
            h = torch.zeros(1, *input_shape)
            for b in self.columns[names[0]]:
                h = b(h)
        d = int(h.flatten(1).shape[1])
        self.heads = task_heads(self.tasks, d, quantiles, monotone)

    quantiles = HardSharing.quantiles

    def forward(self, x):
        names = list(self.tasks)
        xs = [x] * len(names)
        k = 0
        for i in range(len(self.columns[names[0]])):
            xs = [self.columns[n][i](xi) for n, xi in zip(names, xs)]
            if i in self.stitched:
                xs = self.stitches[k](xs)
                k += 1
        return {n: self.heads[n](xi.flatten(1)) for n, xi in zip(names, xs)}


class MMoE(nn.Module):
    """Multi-gate Mixture-of-Experts (Ma et al. 2018).

    ``f_k(x) = sum_e g_k(x)_e * expert_e(x)``, ``g_k(x) = softmax(W_k x)``,
    ``y_k = tower_k(f_k(x))``: experts are shared, each task has its own gate
    and tower.

    Args:
        tasks: ``{name: n_classes or "regression"}``.
        input_shape: shape of one input.
        n_experts: number of experts (default 4).
        expert_hidden: widths of each expert MLP (default ``(64,)``).
        tower_hidden: width of each task tower's hidden layer (default 32).
        expert_factory: a zero-argument callable building one expert (inputs to
            ``(batch, d)``); replaces the MLP experts.
        quantiles: quantile levels of the regression heads, as in :class:`HardSharing`.
        monotone: non-crossing quantile heads, as in :class:`HardSharing`.
    """

    def __init__(self, tasks: dict, input_shape: Sequence[int], n_experts: int = 4,
                 expert_hidden: Sequence[int] = (64,), tower_hidden: int = 32,
                 expert_factory: Optional[Callable[[], nn.Module]] = None, quantiles=None, monotone: bool = True):
        super().__init__()
        self.tasks = check_tasks(tasks)
        if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
            raise ValueError(f"n_experts must be a positive integer, got {n_experts!r}")
        in_dim = _flat_dim(input_shape)
        make = expert_factory or (lambda: mlp_trunk(input_shape, expert_hidden))
        self.experts = nn.ModuleList(make() for _ in range(n_experts))
        self.gates = nn.ModuleDict({n: nn.Linear(in_dim, n_experts) for n in self.tasks})
        d = _out_dim(self.experts[0], input_shape)
        self.towers = nn.ModuleDict({n: nn.Sequential(nn.Linear(d, tower_hidden), nn.ReLU()) for n in self.tasks})
        self.heads = task_heads(self.tasks, tower_hidden, quantiles, monotone)

    quantiles = HardSharing.quantiles

    def forward(self, x):
        e = torch.stack([expert(x) for expert in self.experts], 1)  # (B, E, d)
        flat = x.flatten(1)
        out = {}
        for n in self.tasks:
            g = torch.softmax(self.gates[n](flat), -1)  # (B, E)
            out[n] = self.heads[n](self.towers[n]((g.unsqueeze(-1) * e).sum(1)))
        return out
