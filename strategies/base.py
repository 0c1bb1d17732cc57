"""KTA's base strategy: Avalanche's ``SupervisedTemplate`` on a fast data path.

What it adds to Avalanche:

* **Fast data path.** When an experience's dataset is tensor-backed (every
  leaf a ``TensorDataset``, no active transform: all of KTA's embedded
  streams), batches are cut from tensors by indexing instead of per-sample
  ``__getitem__`` + collate. Shuffling draws a new permutation every epoch
  from a generator seeded with ``seed``; task labels are kept. Otherwise
  Avalanche's own loaders are used, and plugins that replace the loader
  (``ReplayPlugin``) keep working.
* **Sane defaults.** ``train_mb_size=64`` and ``eval_mb_size=256`` (Avalanche's
  default is 1); a default evaluator with accuracy per experience and stream,
  forgetting and BWT, TensorBoard logs when ``log_dir`` is given, and a tqdm
  progress bar.
* **Data-parallel training** under ``torchrun`` (``strategies/distributed.py``):
  the training forward goes through a ``DistributedDataParallel`` wrapper and
  the fast path gives each rank its shard; evaluation stays unsharded.

Example:
    >>> from scenarios import class_incremental
    >>> from kta_plugins.nn import MLP
    >>> from strategies import Naive
    >>> bm = class_incremental("digits", n_experiences=5)
    >>> model = MLP((1, 8, 8), 10)
    >>> strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), seed=0)
    >>> for exp in bm.train_stream:
    ...     strategy.train(exp)
    ...     strategy.eval(bm.test_stream)
"""
from __future__ import annotations

import functools
import sys
from typing import Optional, Sequence, Union

import torch
from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from avalanche.evaluation.metrics import (
    accuracy_metrics,
    bwt_metrics,
    forgetting_metrics,
    loss_metrics,
)
from avalanche.training import Cumulative as _AvCumulative
from avalanche.training import JointTraining as _AvJointTraining
from avalanche.models.utils import avalanche_forward, is_multi_task_module
from avalanche.evaluation import PluginMetric
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.templates.base_sgd import BaseSGDTemplate, PeriodicEval
from avalanche.training.templates.problem_type.supervised_problem import SupervisedProblem
from avalanche.training.templates.update_type.sgd_update import SGDUpdate as _SGDUpdate
from torch import nn

from kta_plugins.compose import ComposeMixin
from scenarios.loaders import TensorBatchLoader, tensor_loader, tensor_view

__all__ = ["KTAStrategyMixin", "Naive", "Cumulative", "JointTraining", "default_evaluator", "ProgressBar", "StepBudget",
           "LossTermsMetric"]


# Callbacks that run once per minibatch or epoch: KTA dispatches them only to the
# plugins, metrics and loggers that implement them.
_ITERATION_CALLBACKS = (
    "before_training_epoch", "after_training_epoch", "before_training_iteration", "before_forward", "after_forward", "before_backward",
    "after_backward", "before_update", "after_update", "after_training_iteration",
    "before_eval_iteration", "before_eval_forward", "after_eval_forward", "after_eval_iteration",
)


def _is_noop(obj, callback: str) -> bool:
    """True when ``obj`` (a metric or logger) provably does nothing on ``callback``."""
    from avalanche.evaluation.metric_definitions import GenericPluginMetric, PluginMetric

    fn = getattr(type(obj), callback, None)
    if fn is None or fn is getattr(PluginMetric, callback, object()):
        return True
    # Avalanche's generic metrics ignore every training callback when they are
    # eval-mode metrics (and vice versa); see GenericPluginMetric's hooks.
    if isinstance(obj, GenericPluginMetric) and fn is getattr(GenericPluginMetric, callback):
        return obj._mode != ("eval" if "eval" in callback else "train")
    return False


class LeanEvaluationPlugin(EvaluationPlugin):
    """Avalanche's ``EvaluationPlugin`` without the per-iteration cost of callbacks nobody uses.

    Avalanche dispatches every callback to every metric and logger, copying the
    experience each time (``experience.logging()``); on small models that costs
    as much as the model. This subclass checks once, per per-iteration callback,
    whether any metric or logger implements it, and returns immediately when
    none does. Metrics and their values are exactly Avalanche's.
    """

    def _needed(self, callback: str) -> bool:
        cache = self.__dict__.setdefault("_kta_needed", {})
        if callback not in cache:
            cache[callback] = not (
                all(_is_noop(m, callback) for m in self.metrics)
                and all(not hasattr(lg, callback) for lg in self.loggers)
            )
        return cache[callback]

    def _check_members(self, strategy):
        """Forget what is needed when metrics or loggers were added, removed or replaced (checked at every
        callback that runs once per experience or epoch, so loggers attached between runs are served)."""
        key = (tuple(map(id, self.metrics)), tuple(map(id, self.loggers)))
        if self.__dict__.get("_kta_members") != key:
            self._kta_members = key
            self._kta_needed = {}
            strategy.__dict__.pop("_kta_hooks_key", None)  # the strategy's hook cache follows

    def _update_metrics_and_loggers(self, strategy, callback: str):
        if callback in _ITERATION_CALLBACKS:
            if not self._needed(callback):
                return []
        else:
            self._check_members(strategy)
        return super()._update_metrics_and_loggers(strategy, callback)


# Define the per-iteration callbacks as real methods: Avalanche's EvaluationPlugin
# resolves them through a failing attribute lookup each time (an exception + a closure).
for _cb in _ITERATION_CALLBACKS:
    def _make(cb):
        def hook(self, strategy, **kwargs):
            return self._update_metrics_and_loggers(strategy, cb)
        hook.__name__ = cb
        return hook
    setattr(LeanEvaluationPlugin, _cb, _make(_cb))
del _cb


class LossTermsMetric(PluginMetric):
    """Every training iteration's loss terms (the strategy's loss ledger, see
    :mod:`kta_plugins.compose`) as ``train/loss/<term>`` scalars, plus ``train/loss/total``,
    at x = the training iteration. A run with no plugin term logs ``criterion`` and ``total``."""

    def __init__(self):
        super().__init__()

    def reset(self, **kwargs):
        pass

    def result(self, **kwargs):
        return None

    def before_training(self, strategy, **kwargs):
        strategy.track_loss_terms = True

    def after_training_iteration(self, strategy, **kwargs):
        from avalanche.evaluation.metric_results import MetricValue

        terms = getattr(strategy, "loss_terms", None) or {}
        x = strategy.clock.train_iterations
        return [MetricValue(self, f"train/loss/{name}", value, x) for name, value in terms.items()]

    def __str__(self):
        return "LossTerms"


def default_evaluator(log_dir: Optional[str] = None, loggers: Sequence = ()) -> EvaluationPlugin:
    """Accuracy (per experience and stream), stream loss, forgetting and BWT; with ``log_dir``,
    also the per-iteration training loss terms (:class:`LossTermsMetric`).

    Args:
        log_dir: when given, a TensorBoard logger writes there.
        loggers: further Avalanche loggers.
    """
    import warnings

    loggers = list(loggers)
    metrics = [
        accuracy_metrics(experience=True, stream=True),
        loss_metrics(stream=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
    ]
    if log_dir is not None:
        from avalanche.logging import TensorboardLogger

        loggers.append(TensorboardLogger(tb_log_dir=str(log_dir)))
        metrics.append(LossTermsMetric())  # training-loss curves, one per ledger term
    with warnings.catch_warnings():  # "No loggers specified": the matrix is our report
        warnings.filterwarnings("ignore", message="No loggers specified")
        return LeanEvaluationPlugin(*metrics, loggers=loggers)


class ProgressBar(SupervisedPlugin):
    """A tqdm bar over the training iterations of each experience."""

    def __init__(self):
        super().__init__()
        self._bar = None

    def before_training_exp(self, strategy, **kwargs):
        from tqdm.auto import tqdm

        try:
            total = getattr(strategy, "train_steps", None) or strategy.train_epochs * len(strategy.dataloader)
        except TypeError:
            total = None
        exp = getattr(strategy.experience, "current_experience", "?")
        self._bar = tqdm(total=total, desc=f"train exp {exp}", leave=False, mininterval=0.5, file=sys.stderr)

    def after_training_iteration(self, strategy, **kwargs):
        if self._bar is not None:
            self._bar.update(1)

    def after_training_exp(self, strategy, **kwargs):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __getstate__(self):  # a tqdm bar cannot be pickled (checkpoints)
        return {**self.__dict__, "_bar": None}


class StepBudget(SupervisedPlugin):
    """Trains each experience for exactly ``strategy.train_steps`` updates (added by the strategy when
    ``train_steps`` is given): enough epochs to cover the budget, then Avalanche's ``stop_training``."""

    def before_training_exp(self, strategy, **kwargs):
        try:
            per_epoch = max(1, len(strategy.dataloader))
        except TypeError:  # a loader without a length: one update per epoch at least
            per_epoch = 1
        self._epochs, self._done = strategy.train_epochs, 0
        strategy.train_epochs = -(-strategy.train_steps // per_epoch)

    def after_training_iteration(self, strategy, **kwargs):
        self._done += 1
        if self._done >= strategy.train_steps:
            strategy.stop_training()

    def after_training_exp(self, strategy, **kwargs):
        strategy.train_epochs = self._epochs
        strategy._stop_training = False  # Avalanche resets it only at the next epoch's start


#: Library warnings KTA knows do not apply to its users (message prefixes): Avalanche 0.6's own
#: ReplayPlugin calls its own deprecated ``storage_policy.update``; nothing a user can change.
QUIET_WARNINGS = ("Call to deprecated function update (removal in version 0.7: switch to pre_adapt",)



def _cache_init_argument_check():
    """Avalanche 0.6 wraps every strategy class's ``__init__`` (``BaseTemplate.__init_subclass__``) with a
    check for misspelled keyword arguments that runs ``inspect.signature`` on the ``__init__`` of every
    class in the method order, at every level of the ``__init__`` chain: 4-5 ms of the 5 ms it takes to
    build a strategy, paid again by every run. The names a class accepts do not change once it exists, so
    they are computed once per class here; an unexpected name is reported by Avalanche's own check."""
    import inspect

    from avalanche.training.templates import base as av_base

    check = av_base._check_mispelled_kwargs
    if getattr(check, "kta_cached", False):
        return
    kinds = {inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY}

    @functools.lru_cache(maxsize=None)
    def accepted(cls):
        return frozenset(k for c in cls.mro() for k, v in inspect.signature(c.__init__).parameters.items()
                         if v.kind in kinds and k != "self")

    def cached_check(cls, kwargs):
        if set(kwargs) - {"self"} - accepted(cls):
            check(cls, kwargs)  # raises Avalanche's TypeError naming the argument(s)

    cached_check.kta_cached = True
    av_base._check_mispelled_kwargs = cached_check


_cache_init_argument_check()

class _QuietLibraryWarnings:
    """Hold back the warnings of :data:`QUIET_WARNINGS` during a call and re-emit the others.
    (Filters cannot do it: Avalanche's ``deprecated`` decorator puts ``simplefilter("once")`` in
    front of every filter on each call.)"""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self._caught = self._cm.__enter__()

    def __exit__(self, *exc):
        import warnings

        self._cm.__exit__(*exc)
        for w in self._caught:
            if not str(w.message).startswith(QUIET_WARNINGS):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        return False


class KTAStrategyMixin(ComposeMixin):
    """Adds KTA's fast data path, defaults and seeding to an Avalanche template, and the three
    places where plugins meet (:class:`kta_plugins.compose.ComposeMixin`: the loss ledger,
    scoped extra forwards, the optimizer assembled from the plugins' declarations).

    Args:
        model: the network.
        optimizer: a torch optimizer over ``model``'s parameters.
        criterion: the loss (default cross-entropy).
        train_mb_size: training minibatch size (default 64).
        train_epochs: epochs per experience (default 1; 0: the experience's callbacks run, no update).
        train_steps: when given, a budget of optimizer updates per experience instead of
            epochs: training cycles through the experience's data (a new shuffle each pass)
            and stops after exactly ``train_steps`` updates; ``train_epochs`` is then ignored.
        eval_mb_size: evaluation minibatch size (default 256; None: ``train_mb_size``, as in Avalanche).
        device: ``"cpu"``, ``"cuda"``...
        plugins: Avalanche / KTA plugins.
        evaluator: an ``EvaluationPlugin``; default :func:`default_evaluator`.
        eval_every: as in Avalanche (-1: no evaluation during training).
        seed: seeds the per-epoch shuffling of the fast data path.
        fast_data: use the tensor-batch loader when possible (default True).
        log_dir: TensorBoard log folder for the default evaluator.
        progress: show a tqdm bar; default: when stderr is a terminal.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: Optional[nn.Module] = None,
        train_mb_size: int = 64,
        train_epochs: int = 1,
        train_steps: Optional[int] = None,
        eval_mb_size: Optional[int] = 256,
        device: Union[str, torch.device] = "cpu",
        plugins: Optional[Sequence] = None,
        evaluator: Optional[EvaluationPlugin] = None,
        eval_every: int = -1,
        seed: int = 0,
        fast_data: bool = True,
        log_dir: Optional[str] = None,
        progress: Optional[bool] = None,
        **kwargs,
    ):
        # Avalanche's semantics: train_epochs=0 runs the experience's callbacks without updates (its own
        # tests fill replay buffers that way); eval_mb_size=None means train_mb_size.
        if eval_mb_size is None:
            eval_mb_size = train_mb_size
        for name, value in (("train_mb_size", train_mb_size), ("train_epochs", train_epochs),
                            ("eval_mb_size", eval_mb_size), ("train_steps", train_steps)):
            if value is None and name == "train_steps":
                continue
            low = 0 if name == "train_epochs" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        plugins = list(plugins or [])
        if progress is None:
            progress = sys.stderr.isatty()
        if progress:
            plugins.append(ProgressBar())
        self.train_steps = train_steps
        if train_steps is not None:
            plugins.append(StepBudget())
        self.seed = seed
        self.fast_data = fast_data
        self._data_generator = torch.Generator().manual_seed(seed)
        super().__init__(
            model=model,
            optimizer=optimizer,
            criterion=criterion if criterion is not None else nn.CrossEntropyLoss(),
            train_mb_size=train_mb_size,
            train_epochs=train_epochs,
            eval_mb_size=eval_mb_size,
            device=device,
            plugins=plugins,
            evaluator=evaluator if evaluator is not None else default_evaluator(log_dir),
            eval_every=eval_every,
            **kwargs,
        )

    def train(self, *args, **kwargs):
        with _QuietLibraryWarnings():  # see QUIET_WARNINGS
            return super().train(*args, **kwargs)

    # ---- the training loop's own cost ---------------------------------------------
    # Avalanche's ``training_epoch`` starts every iteration's loss as ``torch.zeros(1)`` and adds the
    # criterion in place: an allocation, an in-place add and one more backward node per iteration
    # (~25 us, a tenth of a small MLP's step). When nothing can observe the difference, the loss starts
    # as a placeholder and becomes the criterion tensor itself (see _EmptyLoss); and batches the
    # tensor loader cut on the strategy's device are not sent to it again.
    # The iteration's dispatch is also bound once per epoch: each of Avalanche's ``_before_forward``...
    # calls goes straight to the hooks that do something (none: a no-op), and the forward straight to
    # the model (the checks of Avalanche's ``forward`` give the same answer all epoch long).
    def training_epoch(self, **kwargs):
        plan = self._epoch_plan()
        self.__dict__.update(plan)
        try:
            if plan["_kta_quiet_iterations"] and not kwargs:
                self._quiet_epoch()
            else:
                super().training_epoch(**kwargs)
        finally:
            for name in plan:
                self.__dict__.pop(name, None)
            if isinstance(self.__dict__.get("loss"), _EmptyLoss):  # an exception before the criterion
                self.loss = torch.zeros(1, device=self.device)

    def _epoch_plan(self) -> dict:
        """The instance attributes that shadow this epoch's dispatch (see ``training_epoch``); computed
        again when the plugins, the loader, the experience or a setting it depends on change."""
        dl = self.dataloader  # (the first read converts Avalanche's loader)
        self._hooks_for("before_forward")  # refreshes the hook cache when the plugins changed
        # (type(p), not isinstance: an evaluator's attribute lookups cost microseconds)
        key = (self.__dict__["_kta_hooks"], dl, self.experience, self.track_loss_terms,
               tuple(p.eval_every for p in self.plugins if issubclass(type(p), PeriodicEval)))
        cached = self.__dict__.get("_kta_plan")
        if cached is not None and cached[0] == key:
            return cached[1]
        plan = {"_kta_alias_criterion": self._criterion_alias_safe(),
                "_kta_batches_on_device": isinstance(dl, TensorBatchLoader) and _on_device(dl, self.device)}
        for event in _STEP_EVENTS:
            name = "_" + event
            if getattr(type(self), name) is not getattr(KTAStrategyMixin, name):
                continue  # a subclass's own dispatch
            hooks = [h for h in self._hooks_for(event) if not _idle(h)]
            plan[name] = (_noop if not hooks else functools.partial(hooks[0], self) if len(hooks) == 1
                          else functools.partial(_call_all, hooks, self))
        cls = type(self)
        if cls.forward is KTAStrategyMixin.forward and not DistributedHelper.is_distributed:
            plan["forward"] = functools.partial(_plain_forward, self, hasattr(self.experience, "task_labels"))
        if cls.criterion is ComposeMixin.criterion and _next(cls, ComposeMixin, "criterion") is SupervisedProblem.criterion:
            plan["criterion"] = functools.partial(_plain_criterion, self)
        if (cls.backward is ComposeMixin.backward and _next(cls, ComposeMixin, "backward") is BaseSGDTemplate.backward
                and not self.track_loss_terms and not self._arbitrates()):
            plan["backward"] = functools.partial(_plain_backward, self)  # no ledger to finalize
        if cls.optimizer_step is BaseSGDTemplate.optimizer_step:
            plan["optimizer_step"] = functools.partial(_plain_step, self)
        plan["_kta_quiet_iterations"] = (
            plan["_kta_alias_criterion"] and plan["_kta_batches_on_device"]
            and "criterion" in plan  # the criterion goes through record_criterion: the loss is that tensor
            and all(plan.get("_" + e) is _noop for e in _STEP_EVENTS[:-1])
            and cls._unpack_minibatch is KTAStrategyMixin._unpack_minibatch
            and cls._make_empty_loss is KTAStrategyMixin._make_empty_loss)
        self._kta_plan = (key, plan)
        return plan

    def _quiet_epoch(self):
        """Avalanche's ``SGDUpdate.training_epoch`` for an epoch in which every per-iteration hook before
        ``after_training_iteration`` is a no-op, the batches are on the device and the loss is the criterion
        itself (``_kta_quiet_iterations``): the same calls in the same order, without the no-op calls, the
        unpacking of batches already unpacked and the loss placeholder (about 10 us of a 0.35 ms
        small-MLP step). Any hook, a subclass's own loop or unpacking, or keyword arguments to ``train()``
        (passed on to the hooks) keep Avalanche's loop."""
        after_iteration = self._after_training_iteration
        for self.mbatch in self.dataloader:
            if self._stop_training:
                break
            self.optimizer.zero_grad()
            self.mb_output = self.forward()
            self.loss = self.criterion()
            self.backward()
            self.optimizer_step()
            after_iteration()

    def _criterion_alias_safe(self) -> bool:
        """Whether this epoch's loss may be the criterion tensor itself: only on Avalanche's own loop,
        with no loss arbitration or term tracking (they read the criterion term apart from the loss),
        and when the hooks that run between the criterion and backward are either all KTA's (which
        never change ``strategy.loss`` in place) or all Avalanche's (which never read the ledger)."""
        if _next(type(self), KTAStrategyMixin, "training_epoch") is not _SGDUpdate.training_epoch:
            return False  # a strategy with its own loop (ER-ACE, DER...) may add to the loss in place
        if self.track_loss_terms or self._arbitrates():
            return False
        homes = {_home(h) for e in ("before_forward", "after_forward", "before_backward") for h in self._hooks_for(e)
                 if not isinstance(getattr(h, "__self__", None), EvaluationPlugin)}  # metrics read, never add
        return homes <= {"kta"} or homes <= {"avalanche"}

    def _make_empty_loss(self):
        if self.__dict__.get("_kta_alias_criterion") and self.is_training:
            return _EmptyLoss(self)
        return super()._make_empty_loss()

    def _unpack_minibatch(self):
        if self.__dict__.get("_kta_batches_on_device"):
            return  # a list of tensors already on self.device (TensorBatchLoader)
        super()._unpack_minibatch()

    # ---- fast data path ----------------------------------------------------------
    # Every loader, whoever builds it (Avalanche's make_*_dataloader, ReplayPlugin or any plugin that
    # assigns ``strategy.dataloader``), passes through this property: an Avalanche multi-dataset loader
    # or plain DataLoader over tensor-backed data becomes the TensorMultiLoader that gives the same batches.
    # The conversion waits for the first read, and so does building Avalanche's default training loader
    # (make_train_dataloader): a loader replaced before use (the default one, when a replay plugin
    # installs its own) is never built nor converted.
    @property
    def dataloader(self):
        loader = self.__dict__.get("_kta_dataloader")
        if type(loader) is _DeferredLoader:
            self._kta_dataloader = loader = loader.build()
        if self.__dict__.get("_kta_dataloader_pending"):
            self._kta_dataloader_pending = False
            fast = tensor_loader(loader, device=self.device)
            if fast is not None:
                self._kta_dataloader = loader = fast
        return loader

    @dataloader.setter
    def dataloader(self, loader):
        self._kta_dataloader = loader
        self._kta_dataloader_pending = bool(self.__dict__.get("fast_data")) and not isinstance(
            loader, (list, TensorBatchLoader))

    def _obtain_common_dataloader_parameters(self, **kwargs):
        args = super()._obtain_common_dataloader_parameters(**kwargs)
        if args.get("shuffle"):  # shuffling draws from the strategy's seeded generator, on either path
            args.setdefault("generator", self._data_generator)
        return args

    def make_train_dataloader(self, num_workers=0, shuffle=True, pin_memory=None,
                              persistent_workers=False, drop_last=False, **kwargs):
        if self.fast_data and not DistributedHelper.is_distributed and _next(
                type(self), KTAStrategyMixin, "make_train_dataloader") is BaseSGDTemplate.make_train_dataloader:
            # Avalanche's loader with Avalanche's arguments, taken now; built at the first read (the
            # body of BaseSGDTemplate.make_train_dataloader, split in two: see _DeferredLoader)
            assert self.adapted_dataset is not None
            args = self._obtain_common_dataloader_parameters(
                batch_size=self.train_mb_size, num_workers=num_workers, shuffle=shuffle, pin_memory=pin_memory,
                persistent_workers=persistent_workers, drop_last=drop_last)
            if "ffcv_args" in kwargs:
                args["ffcv_args"] = kwargs["ffcv_args"]
            self.dataloader = _DeferredLoader(self.adapted_dataset, hasattr(self.experience, "task_labels"), args)
            return
        fields = tensor_view(self.adapted_dataset) if self.fast_data and DistributedHelper.is_distributed else None
        if fields is None:  # Avalanche's loader (task-balanced when the experience has task labels)
            return super().make_train_dataloader(
                num_workers=num_workers, shuffle=shuffle, pin_memory=pin_memory,
                persistent_workers=persistent_workers, drop_last=drop_last, **kwargs,
            )
        self.dataloader = TensorBatchLoader(  # under torchrun: this rank's shard of each epoch
            [f.to(self.device) for f in fields], self.train_mb_size, shuffle=shuffle,
            generator=self._data_generator, drop_last=drop_last,
            rank=DistributedHelper.rank, world_size=DistributedHelper.world_size,
        )

    def make_eval_dataloader(self, num_workers=0, shuffle=False, pin_memory=None,
                             persistent_workers=False, **kwargs):
        if DistributedHelper.is_distributed:
            # Avalanche's eval loader would shard the data over the ranks and its metrics are
            # not reduced across ranks: evaluate everything on every rank instead.
            from avalanche.benchmarks.utils.data_loader import SingleDatasetDataLoader

            args = self._obtain_common_dataloader_parameters(
                batch_size=self.eval_mb_size, num_workers=num_workers, shuffle=False, pin_memory=pin_memory,
                persistent_workers=persistent_workers)
            self.dataloader = SingleDatasetDataLoader(self.adapted_dataset, distributed_sampling=False, **args)
            return
        return super().make_eval_dataloader(
            num_workers=num_workers, shuffle=shuffle, pin_memory=pin_memory,
            persistent_workers=persistent_workers, **kwargs,
        )

    # ---- data-parallel training (torchrun; see strategies/distributed.py) ---------
    def forward(self):
        """Avalanche's forward; under ``torch.distributed``, training forwards go through a
        ``DistributedDataParallel`` of ``self.model`` (Avalanche's ``DistributedHelper.wrap_model``;
        Avalanche 0.6's templates never wrap the model themselves), so backward averages the
        gradients over ranks. ``self.model`` stays the plain module."""
        if not (self.is_training and DistributedHelper.is_distributed):
            return super().forward()
        key = (id(self.model), tuple((id(p), p.requires_grad) for p in self.model.parameters()))
        if self.__dict__.get("_kta_ddp_key") != key:  # new model, parameters or freezing: wrap again
            self._kta_ddp = DistributedHelper.wrap_model(self.model)
            self._kta_ddp_key = key
        if hasattr(self.experience, "task_labels"):
            return avalanche_forward(self._kta_ddp, self.mb_x, self.mb_task_id)
        return self._kta_ddp(self.mb_x)

    # ---- plugin dispatch ----------------------------------------------------------
    def _hooks_for(self, event: str):
        """Bound hooks of the plugins that really implement ``event`` (cached per plugin list).

        Avalanche's ``trigger_plugins`` calls every plugin on every event; most
        hooks are the base class's no-ops. Skipping those keeps the order and the
        arguments of every hook that does something.
        """
        key = self.__dict__.get("_kta_hooks_key")  # dropped by LeanEvaluationPlugin when its members change
        if key is None or key != self.plugins:  # plugins added, removed, replaced
            self._kta_hooks_key = list(self.plugins)
            self._kta_hooks = {}
        hooks = self._kta_hooks.get(event)
        if hooks is None:
            hooks = []
            for p in self.plugins:
                fn = getattr(type(p), event, None)
                if fn is None and not hasattr(p, event):
                    continue
                if fn is not None and fn is getattr(SupervisedPlugin, event, None):
                    continue  # the base no-op
                if isinstance(p, LeanEvaluationPlugin) and event in _ITERATION_CALLBACKS and not p._needed(event):
                    continue
                hooks.append(getattr(p, event))
            self._kta_hooks[event] = hooks
        return hooks

    # The data generator is part of the training state (checkpoint/resume).
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_data_generator"] = self._data_generator.get_state()
        state.pop("_kta_hooks", None)  # a cache of bound methods, rebuilt on demand
        state.pop("_kta_hooks_key", None)
        state.pop("_kta_ddp", None)  # a DistributedDataParallel wrapper, rebuilt on demand
        state.pop("_kta_ddp_key", None)
        plan = state.pop("_kta_plan", None)  # the epoch's bound dispatch (see training_epoch)
        for name in plan[1] if plan else ():
            state.pop(name, None)
        state.pop("_kta_ledger", None)  # this iteration's loss terms and graph
        state.pop("_kta_criterion", None)
        return state

    def __setstate__(self, state):
        g = torch.Generator()
        g.set_state(state["_data_generator"])
        state["_data_generator"] = g
        self.__dict__.update(state)



# the events of one training iteration (Avalanche's training_epoch calls each once per minibatch)
_STEP_EVENTS = ("before_training_iteration", "before_forward", "after_forward", "before_backward",
                "after_backward", "before_update", "after_update", "after_training_iteration")


def _noop(**kwargs):
    pass


def _call_all(hooks, strategy, **kwargs):
    for hook in hooks:
        hook(strategy, **kwargs)


def _idle(hook) -> bool:
    """Avalanche's ``PeriodicEval`` per-iteration hook when it never evaluates (``eval_every <= 0``)."""
    owner = getattr(hook, "__self__", None)
    return isinstance(owner, PeriodicEval) and owner.eval_every <= 0 and hook.__name__ == "after_training_iteration"


def _plain_criterion(strategy):
    """``ComposeMixin.criterion`` over ``SupervisedProblem.criterion``, in one call."""
    return strategy.record_criterion(strategy._criterion(strategy.mb_output, strategy.mbatch[1]))


def _plain_backward(strategy):
    strategy.loss.backward(retain_graph=strategy.retain_graph)


def _plain_step(strategy):
    strategy.optimizer.step()


def _plain_forward(strategy, task_aware):
    """``SupervisedProblem.forward`` with its checks made once per epoch (eval inside training: as is)."""
    if not strategy.is_training:
        return type(strategy).forward(strategy)
    model, mbatch = strategy.model, strategy.mbatch
    if task_aware and is_multi_task_module(model):
        return model(mbatch[0], mbatch[-1])
    return model(mbatch[0])


class _DeferredLoader:
    """Avalanche 0.6's default training loader (``BaseSGDTemplate.make_train_dataloader``: a
    ``TaskBalancedDataLoader`` with ``oversample_small_groups=True`` when the experience has task labels,
    else a ``DataLoader``), with the dataset and arguments of the ``make_train_dataloader`` call, built when
    ``strategy.dataloader`` is first read. Building it costs ~0.4 ms per experience on split digits, a
    tenth of an experience's set-up; a plugin that replaces the loader before training never pays it."""

    __slots__ = ("dataset", "task_balanced", "args")

    def __init__(self, dataset, task_balanced: bool, args: dict):
        self.dataset, self.task_balanced, self.args = dataset, task_balanced, args

    def build(self):
        from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader
        from torch.utils.data import DataLoader

        if self.task_balanced:
            return TaskBalancedDataLoader(self.dataset, oversample_small_groups=True, **self.args)
        return DataLoader(self.dataset, **self.args)


class _EmptyLoss:
    """``strategy.loss`` at the start of a training iteration when the criterion may be aliased (see
    ``KTAStrategyMixin.training_epoch``). ``loss += criterion()`` makes the loss the criterion tensor
    itself; anything else added, or any other use, behaves as Avalanche's ``torch.zeros(1)``."""

    __slots__ = ("_strategy",)

    def __init__(self, strategy):
        self._strategy = strategy

    def _zeros(self):
        return torch.zeros(1, device=self._strategy.device)

    def __iadd__(self, other):
        recorded = self._strategy.__dict__.get("_kta_criterion")
        if recorded is not None and recorded[1] is other:
            return other
        return self._zeros() + other

    def __add__(self, other):
        return self._zeros() + other

    __radd__ = __add__

    def __getattr__(self, name):
        return getattr(self._zeros(), name)


def _home(hook) -> str:
    """``"kta"``, ``"avalanche"`` or ``"other"``: where a bound hook's function is written."""
    module = getattr(getattr(hook, "__func__", hook), "__module__", "") or ""
    top = module.split(".", 1)[0]
    return "kta" if top in ("kta_plugins", "strategies") else top if top == "avalanche" else "other"


@functools.lru_cache(maxsize=None)
def _next(cls, after, name):
    """The ``name`` that ``super()`` reaches from class ``after`` in ``cls``'s method order."""
    mro = cls.__mro__
    for klass in mro[mro.index(after) + 1:]:
        if name in vars(klass):
            return vars(klass)[name]
    return None


def _on_device(loader, device) -> bool:
    fields = [t for d in getattr(loader, "datasets", [loader.tensors]) for t in d]
    device = torch.device(device)
    return all(t.device == device for t in fields)


def _make_trigger(event):
    def trigger(self, **kwargs):
        for hook in self._hooks_for(event):
            hook(self, **kwargs)
    trigger.__name__ = "_" + event
    return trigger


for _event in _ITERATION_CALLBACKS:
    setattr(KTAStrategyMixin, "_" + _event, _make_trigger(_event))
del _event


class Naive(KTAStrategyMixin, SupervisedTemplate):
    """Fine-tune on each experience in turn (Avalanche's ``Naive``) on KTA's fast path."""


class Cumulative(KTAStrategyMixin, _AvCumulative):
    """Retrain on the union of all experiences so far (Avalanche's ``Cumulative``)."""


class JointTraining(KTAStrategyMixin, _AvJointTraining):
    """Train once on all experiences together (the offline upper bound), Avalanche's ``JointTraining``."""
