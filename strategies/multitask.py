"""``MultiTask``: a strategy whose minibatches carry several targets (``kta run --strategy multitask``).

A minibatch from :mod:`scenarios.multitask` is ``[x, target_1, ..., target_K, task_label]``;
the model returns ``{task name: output}`` (see :mod:`kta_plugins.nn.multitask`);
:class:`MultiTaskLoss` computes one loss per task (cross-entropy for
classification, mean squared error for regression). The strategy's ``loss`` is
their sum and the per-task losses are exposed to plugins as
``strategy.task_losses`` (``{name: scalar tensor}``, with the graph), which the
weighting and gradient-surgery plugins of :mod:`kta_plugins.mtl` reweight.

Quantile heads (:mod:`kta_plugins.mtl.quantile`, Koenker & Bassett 1978): a
regression task whose head is a :class:`~kta_plugins.nn.multitask.QuantileHead`
(``quantiles=`` on the model, or on the strategy when it builds the model) is
trained with the pinball loss. Registered as ``kta run --strategy quantile``.

Evaluation adds per-task metrics to what ``strategy.eval`` returns: accuracy for
classification tasks, MAE and R^2 for regression tasks (of the median for a
quantile task, which also gets ``Coverage`` of the outermost quantiles'
interval, ``Pinball`` loss and ``Crossing`` rate), per experience
(``MTL/<metric>/<stream>/Exp<e>/<task>``) and over the evaluated stream
(``MTL/<metric>/<stream>/<task>``, also in ``strategy.last_task_metrics``).
The accuracy of the first classification task is also reported under
Avalanche's ``Top1_Acc_Exp`` key, so ``kta run``'s accuracy matrix shows it.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from kta_plugins.mtl.quantile import pinball_loss, quantile_sums
from kta_plugins.nn.multitask import check_quantiles, model_quantiles, resolve_quantiles
from scenarios.multitask import check_tasks, find_tasks

from .base import LeanEvaluationPlugin, Naive
from .registry import register_strategy

__all__ = ["MultiTask", "MultiTaskLoss", "task_metrics", "quantile_strategy"]


class MultiTaskLoss(nn.Module):
    """One loss per task: cross-entropy (classification), mean squared error (regression) or
    the pinball loss (regression tasks with quantile heads: summed over the levels, averaged
    over the batch).

    Args:
        tasks: ``{name: n_classes or "regression"}``.
        quantiles: ``{regression task: levels}`` of the tasks with quantile heads
            (outputs ``(batch, Q)``).

    ``forward(outputs, targets)`` takes ``{name: output}`` and ``{name: target}``
    and returns ``{name: loss}``. A head without a target, a target without a
    head, or a wrong output shape is a ``ValueError`` naming the task.
    """

    def __init__(self, tasks: dict, quantiles: Optional[dict] = None):
        super().__init__()
        self.tasks = check_tasks(tasks)
        self.quantiles = resolve_quantiles(quantiles, self.tasks) if quantiles else {}

    def forward(self, outputs: dict, targets: dict) -> dict:
        if not isinstance(outputs, dict):
            raise TypeError(f"the model must return a dict {{task name: output}} for tasks {list(self.tasks)}, "
                            f"got {type(outputs).__name__}; use a kta_plugins.nn.multitask model")
        extra = [n for n in outputs if n not in targets]
        if extra:
            raise ValueError(f"head(s) {extra} have no target; targets: {list(targets)}")
        missing = [n for n in self.tasks if n not in outputs]
        if missing:
            raise ValueError(f"task(s) {missing} have no head in the model's output; heads: {list(outputs)}")
        losses = {}
        for name, spec in self.tasks.items():
            out, y = outputs[name], targets[name]
            if name in self.quantiles:
                # sum over the levels (each quantile weighs as much as a task), mean over the batch
                losses[name] = pinball_loss(out, y, self.quantiles[name], reduction="none", task=name).sum(1).mean()
            elif spec == "regression":
                if out.shape != y.shape:
                    raise ValueError(f"task {name!r}: regression output shape {tuple(out.shape)} "
                                     f"does not match target shape {tuple(y.shape)}")
                losses[name] = F.mse_loss(out, y.to(out.dtype))
            else:
                if out.ndim != 2 or out.shape[1] != spec:
                    raise ValueError(f"task {name!r}: expected logits of shape (batch, {spec}), "
                                     f"got {tuple(out.shape)}")
                losses[name] = F.cross_entropy(out, y.long())
        return losses


def task_metrics(tasks: dict, sums: dict) -> dict:
    """Per-task metrics from accumulated sums (see :meth:`MultiTask._accumulate`)."""
    out = {}
    for name, spec in tasks.items():
        s = sums.get(name)
        if not s or s["n"] == 0:
            continue
        n = s["n"]
        if spec == "regression":
            sst = s["y2"] - s["y"] ** 2 / n
            out[name] = {"MAE": s["abs"] / n, "R2": 1.0 - s["sq"] / sst if sst > 0 else float("nan")}
            if "covered" in s:  # a quantile head
                out[name].update(Coverage=s["covered"] / n, Pinball=s["pinball"] / n, Crossing=s["crossed"] / n)
        else:
            out[name] = {"Acc": s["correct"] / n}
    return out


class MultiTask(Naive):
    """Multi-task training: one loss per task, summed; per-task losses exposed to plugins.

    Args:
        model: returns ``{task: output}`` (a :mod:`kta_plugins.nn.multitask`
            model). A single-task KTA backbone (with ``features`` and
            ``feature_dim``, as ``kta run`` builds) is turned into a
            :class:`~kta_plugins.nn.multitask.HardSharing` model on its trunk
            when training starts.
        optimizer: a torch optimizer.
        tasks: ``{name: n_classes or "regression"}``; default: read from the
            experience's :class:`~scenarios.multitask.MultiTaskDataset`.
        quantiles: quantile heads for the model the strategy builds from a
            single-output backbone: levels for every regression task (e.g.
            ``(0.1, 0.5, 0.9)``) or ``{task: levels}``. A multi-task model
            brings its own heads (``quantiles=`` on the model); then this must
            be ``None`` or match them.
        monotone: non-crossing quantile heads when the strategy builds them.
        plugins: e.g. ``[Uncertainty()]``, ``[PCGrad(shared="features")]``.
        **kwargs: as :class:`strategies.Naive` (default evaluator: loss only;
            per-task metrics come from the strategy itself).

    Attributes exposed to plugins: ``tasks``, ``task_losses`` (this
    minibatch's per-task losses), ``mb_targets`` (``{task: target}``).

    Example:
        >>> from scenarios.multitask import stars, multitask_stream
        >>> from kta_plugins.nn.multitask import HardSharing
        >>> bm = multitask_stream(stars())
        >>> net = HardSharing(bm.tasks, input_shape=bm.input_shape)
        >>> s = MultiTask(model=net, optimizer=torch.optim.Adam(net.parameters(), 1e-3), train_epochs=5)
        >>> s.train(bm.train_stream[0]); s.eval(bm.test_stream)["MTL/R2/test_stream/size"]
    """

    def __init__(self, *, model: nn.Module, optimizer, tasks: Optional[dict] = None, quantiles=None,
                 monotone: bool = True, plugins: Optional[Sequence] = None, evaluator=None,
                 log_dir: Optional[str] = None, **kwargs):
        self.tasks = check_tasks(tasks) if tasks is not None else None
        if isinstance(quantiles, dict):
            quantiles = {n: check_quantiles(v, f"quantiles[{n!r}]") for n, v in quantiles.items()}
        elif quantiles is not None:
            quantiles = check_quantiles(quantiles)
        if not isinstance(monotone, bool):
            raise TypeError(f"monotone must be bool, got {type(monotone).__name__} {monotone!r}")
        self._quantiles_arg, self._monotone = quantiles, monotone
        #: ``{task: levels}`` of the model's quantile heads (known once the model is adapted)
        self.quantiles: dict = model_quantiles(model)
        if self.tasks is not None and getattr(model, "tasks", None) is not None and \
                list(model.tasks) != list(self.tasks):
            raise ValueError(f"tasks {list(self.tasks)} do not match the model's tasks {list(model.tasks)}")
        if evaluator is None:
            from avalanche.evaluation.metrics import loss_metrics

            loggers = []
            if log_dir is not None:
                from avalanche.logging import TensorboardLogger

                loggers.append(TensorboardLogger(tb_log_dir=str(log_dir)))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="No loggers specified")
                evaluator = LeanEvaluationPlugin(loss_metrics(stream=True), loggers=loggers)
        super().__init__(model=model, optimizer=optimizer, plugins=plugins, evaluator=evaluator, **kwargs)
        self.task_losses: dict = {}
        self.last_task_metrics: dict = {}
        self._mtl_criterion = MultiTaskLoss(self.tasks, self.quantiles) if self.tasks is not None else None
        self._sums: dict = {}
        self._exp_metrics: dict = {}

    # ---- tasks and model -------------------------------------------------------
    def _resolve_tasks(self):
        found = find_tasks(self.experience.dataset) if self.experience is not None else None
        if self.tasks is None:
            if found is None:
                raise ValueError("MultiTask: the experience carries no task description (not a "
                                 "scenarios.multitask stream); pass tasks={name: n_classes or 'regression'}")
            self.tasks = check_tasks(found)
            self._mtl_criterion = MultiTaskLoss(self.tasks, self.quantiles)
        elif found is not None and list(found) != list(self.tasks):
            raise ValueError(f"tasks {list(self.tasks)} do not match the stream's tasks {list(found)}")

    def model_adaptation(self, model=None):
        self._resolve_tasks()
        model = super().model_adaptation(model)
        if getattr(model, "tasks", None) is None:
            from kta_plugins.nn.multitask import HardSharing

            model = HardSharing.from_backbone(model, self.tasks, resolve_quantiles(self._quantiles_arg, self.tasks),
                                              self._monotone).to(self.device)
        elif list(model.tasks) != list(self.tasks):
            raise ValueError(f"the model's tasks {list(model.tasks)} do not match the tasks {list(self.tasks)} "
                             f"({len(model.tasks)} heads for {len(self.tasks)} tasks)")
        elif self._quantiles_arg is not None and \
                resolve_quantiles(self._quantiles_arg, self.tasks) != model_quantiles(model):
            raise ValueError(f"quantiles={self._quantiles_arg!r} do not match the model's quantile heads "
                             f"{model_quantiles(model)}; build the model with quantiles= or leave the "
                             "strategy's quantiles=None")
        if model_quantiles(model) != self.quantiles:
            self.quantiles = model_quantiles(model)
            self._mtl_criterion = MultiTaskLoss(self.tasks, self.quantiles)
        return model

    # ---- data and loss ---------------------------------------------------------------
    @property
    def mb_targets(self) -> dict:
        ys = self.mbatch[1:-1]
        if len(ys) != len(self.tasks):
            raise ValueError(f"the minibatch carries {len(ys)} target(s) but there are {len(self.tasks)} tasks "
                             f"{list(self.tasks)}; a multi-task stream gives [x, target_1..target_K, task_label]")
        return dict(zip(self.tasks, ys))

    def compute_task_losses(self, outputs: dict, targets: Optional[dict] = None) -> dict:
        """``{task: loss}`` of ``outputs`` (default targets: the current minibatch's); no metrics."""
        return self._mtl_criterion(outputs, self.mb_targets if targets is None else targets)

    def criterion(self):
        targets = self.mb_targets
        self.task_losses = self._mtl_criterion(self.mb_output, targets)
        if not self.is_training:
            self._accumulate(self.mb_output, targets)
        return self.record_criterion(sum(self.task_losses.values()))

    # ---- per-task metrics ---------------------------------------------------------
    def _accumulate(self, outputs, targets):
        with torch.no_grad():
            for name, spec in self.tasks.items():
                s = self._sums.setdefault(name, {"n": 0, "correct": 0.0, "abs": 0.0, "sq": 0.0, "y": 0.0, "y2": 0.0})
                out, y = outputs[name].detach(), targets[name]
                s["n"] += len(y)
                if name in self.quantiles:
                    for k, v in quantile_sums(out, y, self.quantiles[name]).items():
                        s[k] = s.get(k, 0.0) + v
                    y = y.to(out.dtype)
                    s["y"] += float(y.sum())
                    s["y2"] += float((y ** 2).sum())
                elif spec == "regression":
                    y = y.to(out.dtype)
                    s["abs"] += float((out - y).abs().sum())
                    s["sq"] += float(((out - y) ** 2).sum())
                    s["y"] += float(y.sum())
                    s["y2"] += float((y ** 2).sum())
                else:
                    s["correct"] += float((out.argmax(1) == y).sum())

    def _before_eval_exp(self, **kwargs):
        self._sums = {}
        super()._before_eval_exp(**kwargs)

    def _after_eval_exp(self, **kwargs):
        stream = self.experience.origin_stream.name
        stream = stream if stream.endswith("_stream") else f"{stream}_stream"
        self._exp_metrics.setdefault(stream, {})[self.experience.current_experience] = dict(self._sums)
        super()._after_eval_exp(**kwargs)

    def eval(self, exp_list, **kwargs):
        self._exp_metrics = {}
        results = super().eval(exp_list, **kwargs)
        if self.tasks is None:
            return results
        results = dict(results) if results is not None else {}
        first_cls = next((n for n, s in self.tasks.items() if s != "regression"), None)
        self.last_task_metrics = {}
        for stream, per_exp in self._exp_metrics.items():
            pooled = {}
            for e, sums in sorted(per_exp.items()):
                for task, m in task_metrics(self.tasks, sums).items():
                    for metric, v in m.items():
                        results[f"MTL/{metric}/{stream}/Exp{e:03d}/{task}"] = v
                if first_cls is not None and first_cls in sums:
                    acc = task_metrics(self.tasks, sums)[first_cls]["Acc"]
                    results[f"Top1_Acc_Exp/eval_phase/{stream}/Task000/Exp{e:03d}"] = acc
                for task, s in sums.items():
                    p = pooled.setdefault(task, {k: 0.0 for k in s})
                    for k, v in s.items():
                        p[k] += v
            metrics = task_metrics(self.tasks, pooled)
            self.last_task_metrics[stream] = metrics
            for task, m in metrics.items():
                for metric, v in m.items():
                    results[f"MTL/{metric}/{stream}/{task}"] = v
        return results


register_strategy("multitask", MultiTask,
                  help="multi-target minibatches, one loss per task (exposed to plugins), per-task metrics")


@register_strategy("quantile")
def quantile_strategy(*, model: nn.Module, optimizer, quantiles: Sequence[float] = (0.1, 0.5, 0.9),
                      monotone: bool = True, **kwargs) -> MultiTask:
    """``MultiTask`` with quantile heads (pinball loss, Koenker & Bassett 1978) on every regression task;
    test metrics add the interval coverage, pinball loss and crossing rate
    (``kta run --scenario stars --strategy "quantile:quantiles=[0.05,0.5,0.95]"``)."""
    return MultiTask(model=model, optimizer=optimizer, quantiles=quantiles, monotone=monotone, **kwargs)
