"""Collapse guards for the alignment and adversarial plugins (DANN, CDAN, CORAL, MMD, fair adversary).

Feature alignment fails in a few recognisable ways, and each leaves a trace in
quantities the plugin already computes every step:

``discriminator``
    the domain classifier (or attribute adversary) wins: its accuracy stays
    near 100% (its loss near 0) long after the warm-up, so the reversed
    gradient carries no useful signal and the features are not aligned;
``feature-variance``
    the aligned features collapse to (near) constants: their variance over
    the batch falls below ``1e-3`` of its value during the first steps (an
    alignment loss is trivially 0 on constant features);
``source-accuracy``
    the supervised task itself dies: source training accuracy at chance
    (at most ``1.5 / n_classes``) in the second half of training;
``target-collapse``
    the target predictions pile onto one class while the source's do not: in
    the second half of training, the most frequent predicted class takes at
    least 60% of the target minibatches (running mean) and at least 3 times its
    share on the source side (``n_classes > 2`` only). Alignment can map a whole
    target domain into one source class while source accuracy stays high: a
    silent failure the other guards do not see.

:class:`CollapseGuard` watches these with a patience of ``max(20, 10%)`` of the
experience's updates. When one trips, it prints one warning (a
:class:`CollapseWarning`, once per guard and experience) that names the
argument to change, appends a record to ``plugin.guard_events`` (``guard``,
``step``, ``value``, ``message``; ``kta compare`` reads it to mark the run), and
logs ``guard/<plugin>/<guard>`` = 1 to the strategy's loggers that take scalars
(TensorBoard, W&B). The monitored statistics themselves are logged as
``guard/<plugin>/discriminator_acc``, ``.../feature_var``, ``.../source_acc`` and
``.../target_top_share`` at the end of every training epoch. With ``guards="error"``
the plugin raises :class:`CollapseError` instead; ``guards="off"`` disables them.

Example:
    >>> dann = DANN(weight=10.0, head_dropout=0.0)          # a deliberately broken setting
    >>> Naive(model=model, optimizer=opt, plugins=[dann], train_epochs=10).train(bm.train_stream[0])
    CollapseWarning: DANN: source training accuracy is at chance (0.10 for 20 steps): the alignment term
    destroys the features; lower weight (or lambda_max)
    >>> dann.guard_events[0]["guard"]
    'source-accuracy'
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

__all__ = ["CollapseGuard", "CollapseWarning", "CollapseError", "GUARD_MODES", "log_scalar"]

GUARD_MODES = ("warn", "error", "off")


class CollapseWarning(UserWarning):
    """A collapse guard tripped (see :mod:`kta_plugins.adapt.guards`)."""


class CollapseError(RuntimeError):
    """A collapse guard tripped with ``guards="error"``."""


def log_scalar(strategy, name: str, value: float, step: int) -> None:
    """Send one scalar to the strategy's loggers that plot scalars (TensorBoard, W&B; not the text loggers)."""
    from avalanche.logging import InteractiveLogger, TextLogger

    evaluator = getattr(strategy, "evaluator", None)
    for logger in getattr(evaluator, "loggers", None) or ():
        if isinstance(logger, (TextLogger, InteractiveLogger)):
            continue
        fn = getattr(logger, "log_single_metric", None)
        if fn is not None:
            fn(name, float(value), int(step))


class CollapseGuard:
    """Watches one plugin's training for the collapses of :mod:`kta_plugins.adapt.guards`.

    Args:
        owner: the plugin (its ``technique`` names it in messages; events go to ``owner.guard_events``).
        mode: ``"warn"`` (default), ``"error"`` or ``"off"``.
        advice: for each guard name, the argument(s) to change, quoted in the message.
        disc_acc: discriminator accuracy at or above which it "wins" (default 0.99).
        var_ratio: feature variance below this fraction of its early value is a collapse (default 1e-3).
        patience: steps a condition must hold (default: ``max(20, total_steps // 10)``).
    """

    def __init__(self, owner, mode: str = "warn", advice: Optional[dict] = None, disc_acc: float = 0.99,
                 var_ratio: float = 1e-3, patience: Optional[int] = None):
        self.owner = owner
        self.mode = mode
        self.advice = dict(advice or {})
        self.disc_acc = disc_acc
        self.var_ratio = var_ratio
        self.patience = patience
        self.reset(1, None)

    def reset(self, total_steps: int, n_classes: Optional[int]) -> None:
        """Start watching a new experience of ``total_steps`` updates."""
        self.total_steps = max(1, int(total_steps))
        self.n_classes = n_classes
        self.runs = {"discriminator": 0, "feature-variance": 0, "source-accuracy": 0, "target-collapse": 0}
        self._share = None
        self.fired: set = set()
        self.var_ref: Optional[float] = None
        self._early: list = []
        self._epoch: dict = {}
        self._src_ema: Optional[float] = None

    def _patience(self) -> int:
        return self.patience if self.patience is not None else max(20, self.total_steps // 10)

    # ------------------------------------------------------------------ observations (one step each)
    def observe(self, strategy, step: int, features: Optional[torch.Tensor] = None,
                disc_acc: Optional[float] = None, target_logits: Optional[torch.Tensor] = None) -> None:
        """Update every guard with one step's statistics; ``features`` the (source) features of the
        aligned layer, ``disc_acc`` the domain classifier's accuracy on this step's batch (adversarial only)."""
        if self.mode == "off":
            return
        p = step / self.total_steps
        if disc_acc is not None:
            self._acc("discriminator_acc", disc_acc)
            # after the warm-up (p >= 0.2): by then the reversed gradient should keep the classifier uncertain
            self._count("discriminator", p >= 0.2 and disc_acc >= self.disc_acc, step, disc_acc,
                        "the domain classifier wins (accuracy {v:.2f} for {n} steps): the features are not aligned")
        if features is not None and len(features) > 1:
            v = float(features.detach().float().var(0).mean())
            self._acc("feature_var", v)
            if len(self._early) < 10:
                self._early.append(v)
                if len(self._early) == 10:
                    self.var_ref = max(sum(self._early) / 10, 1e-12)
            elif self.var_ref is not None:
                self._count("feature-variance", v < self.var_ratio * self.var_ref, step, v,
                            "the features of the aligned layer collapse (variance {v:.2g}, "
                            f"{self.var_ref:.2g} at the start, for {{n}} steps)")
        if target_logits is not None:
            self._target_collapse(strategy, step, p, target_logits)
        src = self._source_accuracy(strategy)
        if src is not None:
            if self.n_classes is None:
                self.n_classes = int(strategy.mb_output.shape[1])
            self._src_ema = src if self._src_ema is None else 0.9 * self._src_ema + 0.1 * src
            self._acc("source_acc", src)
            chance = 1.0 / self.n_classes if self.n_classes else None
            if chance is not None and self.n_classes > 2:
                self._count("source-accuracy", p >= 0.5 and self._src_ema <= 1.5 * chance, step, self._src_ema,
                            "source training accuracy is at chance ({v:.2f} for {n} steps): the alignment "
                            "term destroys the features")

    def _target_collapse(self, strategy, step, p, target_logits):
        out = getattr(strategy, "mb_output", None)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or target_logits.ndim != 2 or out.shape[1] <= 2:
            return
        c = out.shape[1]
        ht = torch.bincount(target_logits.detach().argmax(1).cpu(), minlength=c).float() / len(target_logits)
        hs = torch.bincount(out.detach().argmax(1).cpu(), minlength=c).float() / len(out)
        cur = torch.stack([ht, hs])
        self._share = cur if self._share is None else 0.9 * self._share + 0.1 * cur
        k = int(self._share[0].argmax())
        t_share, s_share = float(self._share[0, k]), float(self._share[1, k])
        self._acc("target_top_share", t_share)
        self._count("target-collapse", p >= 0.5 and t_share >= 0.6 and t_share >= 3 * s_share, step, t_share,
                    f"the target predictions collapse onto class {k} ({{v:.0%}} of target samples, "
                    f"{s_share:.0%} of source samples, for {{n}} steps)")

    @staticmethod
    def _source_accuracy(strategy) -> Optional[float]:
        try:
            out, y = strategy.mb_output, strategy.mb_y
        except (AttributeError, TypeError, IndexError, AssertionError):
            return None
        if not isinstance(out, torch.Tensor) or not isinstance(y, torch.Tensor) or out.ndim != 2:
            return None
        keep = y >= 0
        if not bool(keep.any()):
            return None
        return float((out.detach()[keep].argmax(1) == y[keep]).float().mean())

    def _acc(self, name, value):
        s = self._epoch.setdefault(name, [0.0, 0])
        s[0] += float(value)
        s[1] += 1

    def _count(self, guard, condition, step, value, text):
        self.runs[guard] = self.runs[guard] + 1 if condition else 0
        if self.runs[guard] >= self._patience() and guard not in self.fired:
            self.fired.add(guard)
            self._fire(guard, step, value, text.format(v=value, n=self.runs[guard]))

    def _fire(self, guard, step, value, text):
        owner = self.owner
        msg = f"{owner.technique}: {text}; {self.advice.get(guard, 'lower weight')}"
        event = {"guard": guard, "step": int(step), "value": float(value), "message": msg,
                 "plugin": owner.technique}
        owner.guard_events.append(event)
        strategy = getattr(owner, "_guard_strategy", None)
        if strategy is not None:
            log_scalar(strategy, f"guard/{owner.technique}/{guard}", 1.0, step)
        if self.mode == "error":
            raise CollapseError(msg)
        warnings.warn(msg, CollapseWarning, stacklevel=2)

    def end_epoch(self, strategy, step: int) -> None:
        """Log the epoch's mean statistics to the strategy's scalar loggers."""
        for name, (total, n) in self._epoch.items():
            if n:
                log_scalar(strategy, f"guard/{self.owner.technique}/{name}", total / n, step)
        self._epoch = {}


class GuardedPlugin:
    """Mixin for :class:`~kta_plugins.adapt.base.AlignmentPlugin` subclasses: runs a :class:`CollapseGuard`.

    The subclass calls :meth:`_init_guards` in ``__init__`` and, in ``alignment_loss``, stores the step's
    source features in ``self._guard_features``, the target outputs in ``self._guard_target_logits`` and
    (adversarial plugins) the domain classifier's batch accuracy in ``self._guard_disc_acc``; the hooks
    below do the rest. ``guard_advice`` maps each guard
    to the argument(s) the warning tells the user to change.
    """

    guard_advice: dict = {}

    def _init_guards(self, guards: str) -> None:
        from ..base import check_choice

        self.guards = check_choice("guards", guards, GUARD_MODES)
        #: one record per tripped guard: {"guard", "step", "value", "message", "plugin"}
        self.guard_events: list = []
        self._guard = CollapseGuard(self, self.guards, advice=self.guard_advice)
        self._guard_features = None
        self._guard_disc_acc = None
        self._guard_target_logits = None
        self._guard_strategy = None

    def before_training_exp(self, strategy, **kwargs):
        super().before_training_exp(strategy, **kwargs)
        self._guard_strategy = strategy
        self._guard.reset(getattr(self, "total_steps", 1), None)

    def after_update(self, strategy, **kwargs):
        super().after_update(strategy, **kwargs)
        if self._guard_features is not None or self._guard_disc_acc is not None:
            self._guard.observe(strategy, self.step, self._guard_features, self._guard_disc_acc,
                                self._guard_target_logits)
        self._guard_features = self._guard_disc_acc = self._guard_target_logits = None

    def after_training_epoch(self, strategy, **kwargs):
        sup = getattr(super(), "after_training_epoch", None)
        if sup is not None:
            sup(strategy, **kwargs)
        self._guard.end_epoch(strategy, self.step)
