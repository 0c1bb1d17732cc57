"""Task grouping by inter-task affinity (TAG; Fifty, Amid, Zhao, Yu, Anil & Finn, NeurIPS 2021,
"Efficiently Identifying Task Groupings for Multi-Task Learning").

During multi-task training, on the current minibatch ``X``, the *lookahead*
affinity of task ``i`` onto task ``j`` is

    ``theta_s' = theta_s - lr * grad_{theta_s} L_i(X, theta_s, theta_i)``

    ``Z_{i->j} = 1 - L_j(X, theta_s', theta_j) / L_j(X, theta_s, theta_j)``

(only the shared parameters ``theta_s`` step; the heads stay). ``Z_{i->j} > 0``:
a step on task ``i`` lowers task ``j``'s loss (``i`` helps ``j``); ``< 0``: it
raises it. :class:`TaskAffinity` (``task-affinity``) measures ``Z`` every
``every`` iterations without changing training (weights, buffers and the
random-number stream are restored after the lookahead) and keeps the running
mean over training in its ``state_dict``.

:func:`suggest_groups` is the paper's network selection: choose ``n_groups``
groups of tasks (a task may sit in several groups, as in the paper; each task is
served by the group that suits it best) maximising the total affinity
``sum_t max_{g contains t} mean_{j in g, j != t} Z_{j->t}`` (a task alone in a
group scores 0), by brute force over all candidate groups (fine for up to about
6 tasks).

The terms are the per-task losses under :class:`strategies.multitask.MultiTask`
and, under any other strategy, ``new`` / ``replay`` (the split of
:func:`kta_plugins.mtl.terms.loss_terms`; regularizer terms are not measured).

Example:
    >>> aff = TaskAffinity(every=5, lr=0.1)
    >>> MultiTask(model=net, optimizer=opt, plugins=[aff]).train(bm.train_stream[0])
    >>> names, Z = aff.affinity()            # Z[i, j] = mean Z_{i->j}
    >>> suggest_groups(Z, n_groups=2, names=names)["groups"]
    >>> # kta run --scenario "multitask-mnist1d:quantity=scale,shear" --strategy multitask --plugin task-affinity
"""
from __future__ import annotations

import itertools
import math
from types import SimpleNamespace
from typing import Optional, Sequence

import torch

from ..base import KTAPlugin, check_int, check_positive, check_type, register_plugin
from ..compose import finalize_loss
from ..nn.tap import suspended
from .terms import SharedGradients, loss_terms, task_gradients

__all__ = ["TaskAffinity", "lookahead_affinity", "suggest_groups", "group_score"]

_MAX_COMBINATIONS = 2_000_000


def _terms(strategy, outputs) -> dict:
    """``{term: loss}`` of ``outputs`` on the current minibatch (see the module docstring)."""
    compute = getattr(strategy, "compute_task_losses", None)
    if callable(compute) and getattr(strategy, "tasks", None):
        return dict(compute(outputs))
    crit = strategy._criterion
    proxy = SimpleNamespace(mb_output=outputs, mb_y=strategy.mb_y, _criterion=crit,
                            experience=getattr(strategy, "experience", None), loss=crit(outputs, strategy.mb_y))
    names, losses, _, _ = loss_terms(proxy)
    return {n: l for n, l in zip(names, losses) if n != "regularizers"}


def lookahead_affinity(strategy, params: Sequence[torch.Tensor], lr: float) -> tuple:
    """``(names, Z)`` on the current minibatch: ``Z[i, j] = 1 - L_j(theta_s') / L_j(theta_s)`` after an
    SGD step of size ``lr`` on term ``i`` w.r.t. ``params`` (the shared parameters).

    Needs ``strategy.mb_output`` with its graph (call it from ``before_backward``). The model's
    parameters, buffers (batch-norm statistics) and the random-number state are left as they were.
    """
    base = _terms(strategy, strategy.mb_output)
    names = [n for n, l in base.items() if isinstance(l, torch.Tensor) and l.requires_grad]
    if not names:
        return [], torch.zeros(0, 0)
    grads = task_gradients([base[n] for n in names], list(params))
    before = torch.stack([base[n].detach() for n in names]).double()
    model = strategy.model
    # The lookahead runs through torch.func.functional_call with stepped copies of the shared
    # parameters: stepping them in place would invalidate the graph the strategy's backward still needs.
    by_id = {id(p): n for n, p in model.named_parameters()}
    missing = [i for i, p in enumerate(params) if id(p) not in by_id]
    if missing:
        raise ValueError("lookahead_affinity: params must be parameters of strategy.model")
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    args = (strategy.mb_x,)
    from avalanche.models import MultiTaskModule

    if isinstance(model, MultiTaskModule):
        args = (strategy.mb_x, strategy.mb_task_id)
    devices = [p.device.index or 0 for p in params[:1] if p.device.type == "cuda"]
    z = torch.zeros(len(names), len(names), dtype=torch.float64)
    for i in range(len(names)):
        moved, offset = {}, 0
        for p in params:
            n = p.numel()
            moved[by_id[id(p)]] = p.detach() - lr * grads[i, offset:offset + n].view_as(p)
            offset += n
        # copies of the buffers absorb batch-norm updates; the same random state for every
        # lookahead (dropout masks), then the caller's state back
        state = {**moved, **{k: b.clone() for k, b in buffers.items()}}
        with torch.no_grad(), torch.random.fork_rng(devices=devices), suspended(model):
            # suspended: other plugins' feature taps keep the minibatch's features (an extra forward)
            after = _terms(strategy, torch.func.functional_call(model, state, args))
        z[i] = 1.0 - torch.stack([after[n].detach().double() for n in names]) / before.clamp_min(1e-12)
    return names, z.float()


def group_score(affinity, group: Sequence[int], task: int) -> float:
    """How well ``group`` serves ``task``: ``mean_{j in group, j != task} Z[j, task]`` (0 when alone)."""
    others = [j for j in group if j != task]
    if not others:
        return 0.0
    return float(sum(float(affinity[j][task]) for j in others) / len(others))


def suggest_groups(affinity, n_groups: int, names: Optional[Sequence[str]] = None, overlap: bool = True) -> dict:
    """TAG network selection: ``n_groups`` task groups maximising the total inter-task affinity.

    Args:
        affinity: ``K x K`` matrix (tensor, array or nested lists), ``affinity[i][j] = Z_{i->j}``.
        n_groups: number of groups (networks), ``1 <= n_groups <= K``.
        names: task names (default ``"0".."K-1"``).
        overlap: allow a task in several groups (the paper's setting; each task
            is then served by its best group). ``False``: the groups partition the tasks.

    Returns ``{"groups": [tuple of names], "score": total, "served_by": {task: group}}``.
    Brute force over ``C(2^K - 1, n_groups)`` candidate sets (``ValueError`` above 2 million).

    Example:
        >>> suggest_groups([[0, .5, -.5], [.5, 0, -.5], [-.5, -.5, 0]], 2, ["a", "b", "c"])["groups"]
        [('a', 'b'), ('c',)]
    """
    z = torch.as_tensor(affinity, dtype=torch.float64)
    if z.ndim != 2 or z.shape[0] != z.shape[1] or z.shape[0] < 1:
        raise ValueError(f"affinity must be a square K x K matrix, got shape {tuple(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("affinity must be finite (a NaN means a pair was never measured)")
    k = z.shape[0]
    n_groups = check_int("n_groups", n_groups, minimum=1)
    if n_groups > k:
        raise ValueError(f"n_groups must be <= the number of tasks ({k}), got {n_groups}")
    check_type("overlap", overlap, bool)
    names = [str(i) for i in range(k)] if names is None else [str(n) for n in names]
    if len(names) != k:
        raise ValueError(f"names has {len(names)} entries for a {k} x {k} affinity matrix")
    subsets = [tuple(i for i in range(k) if m >> i & 1) for m in range(1, 2 ** k)]
    if math.comb(len(subsets), n_groups) > _MAX_COMBINATIONS:
        raise ValueError(f"{k} tasks in {n_groups} groups: too many candidate sets for brute force")
    score = {(g, t): group_score(z, g, t) for g in subsets for t in g}
    best, best_val = None, -math.inf
    full = set(range(k))
    for combo in itertools.combinations(subsets, n_groups):
        members = [t for g in combo for t in g]
        if set(members) != full or (not overlap and len(members) != k):
            continue
        val = sum(max(score[(g, t)] for g in combo if t in g) for t in range(k))
        if val > best_val + 1e-12:
            best, best_val = combo, val
    served = {names[t]: tuple(names[i] for i in max((g for g in best if t in g), key=lambda g: score[(g, t)]))
              for t in range(k)}
    return {"groups": [tuple(names[i] for i in g) for g in best], "score": best_val, "served_by": served}


@register_plugin("task-affinity")
class TaskAffinity(KTAPlugin):
    """Records the lookahead inter-task affinity ``Z_{i->j}`` during training (TAG, Fifty et al. 2021).

    ``Z_{i->j} = 1 - L_j(theta_s - lr grad_{theta_s} L_i) / L_j(theta_s)`` on the
    current minibatch, shared parameters ``theta_s`` only; averaged over the
    measured iterations. Training is not changed (the plugin only measures).
    Cost per measured iteration: ``K`` gradients and ``K`` extra forward passes.

    Args:
        every: measure every ``every``-th training iteration (default 1).
        lr: lookahead step size (default: the optimizer's learning rate of its
            first parameter group, read at each measurement).
        shared: the shared module whose parameters step (default ``"features"``).

    State (``state_dict``): ``sums`` / ``counts`` (``{i: {j: ...}}``) and
    ``n_iterations``. ``affinity()`` returns ``(names, K x K mean matrix)``.

    Example:
        >>> aff = TaskAffinity(every=5)
        >>> MultiTask(model=net, optimizer=opt, plugins=[aff]).train(bm.train_stream[0])
        >>> names, Z = aff.affinity(); suggest_groups(Z, 2, names)
    """

    state_attrs = ("sums", "counts", "n_iterations")

    def __init__(self, every: int = 1, lr: Optional[float] = None, shared: str = "features"):
        super().__init__()
        self.every = check_int("every", every, minimum=1)
        self.lr = None if lr is None else float(check_positive("lr", lr))
        self.shared = check_type("shared", shared, str)
        self.grads = SharedGradients(self.shared, "parameters")
        self.sums: dict = {}
        self.counts: dict = {}
        self.n_iterations = 0

    def before_training_exp(self, strategy, **kwargs):
        self.grads.attach(strategy.model)

    def after_training_exp(self, strategy, **kwargs):
        self.grads.detach()

    #: measures after every plugin added its terms (kta_plugins.compose), before any arbitration
    loss_stage = "measure"

    def before_backward(self, strategy, **kwargs):
        finalize_loss(self, strategy)

    def finalize_loss(self, strategy):
        self.n_iterations += 1
        if (self.n_iterations - 1) % self.every:
            return
        if not self.grads.params:
            self.grads.attach(strategy.model)
        params = self.grads.tensors()
        if not params:  # the shared part is frozen for now (another plugin's doing): nothing to measure
            return
        lr = self.lr if self.lr is not None else float(strategy.optimizer.param_groups[0]["lr"])
        names, z = lookahead_affinity(strategy, params, lr)
        for a, i in enumerate(names):
            for b, j in enumerate(names):
                if math.isfinite(float(z[a, b])):
                    self.sums.setdefault(i, {})[j] = self.sums.get(i, {}).get(j, 0.0) + float(z[a, b])
                    self.counts.setdefault(i, {})[j] = self.counts.get(i, {}).get(j, 0) + 1

    def affinity(self) -> tuple:
        """``(names, Z)``: ``Z[i, j]`` = mean ``Z_{names[i] -> names[j]}`` (NaN where never measured)."""
        names = list(self.sums)
        for row in self.sums.values():
            names += [n for n in row if n not in names]
        z = torch.full((len(names), len(names)), float("nan"))
        for a, i in enumerate(names):
            for b, j in enumerate(names):
                c = self.counts.get(i, {}).get(j, 0)
                if c:
                    z[a, b] = self.sums[i][j] / c
        return names, z
