"""The teacher side of every distillation plugin.

:class:`DistillationPlugin` is the base of :mod:`kta_plugins.distill`'s plugins.
It owns the teacher and feeds a loss module during Avalanche training:

* ``teacher=<nn.Module>``: a :func:`~kta_plugins.base.frozen_copy` of it
  (``eval()``, ``requires_grad=False``, moved to the strategy's device, kept
  on the plugin, never in ``strategy.model`` nor in the optimizer);
* ``teacher="path/to/weights.pt"``: a copy of the student's architecture into
  which the checkpoint is loaded with ``torch.load(weights_only=True)``
  (a ``state_dict``, or a dict holding one under ``state_dict`` / ``model`` /
  ``model_state_dict``);
* ``teacher="previous"``: a frozen copy of the student taken at the end of
  every experience (distillation between experiences, as in LwF but with any of
  the losses). Nothing is distilled during the first experience. The classes
  the copy has seen are remembered per task label, and logit losses use only
  those outputs.

Heads that grow: when the teacher outputs fewer classes than the student, logit
losses use the student's first ``n_teacher`` outputs. Task-incremental
multi-head models (Avalanche ``MultiTaskModule``): logit losses run teacher and
student on every head the teacher knows, for the current inputs, and sum.

Intermediate features are read only through :class:`kta_plugins.nn.FeatureTap`.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..base import KTAPlugin, check_type, frozen_copy
from ..compose import add_loss_term, extra_forward
from ..nn import FeatureTap, resolve_module
from .cache import teacher_outputs

__all__ = ["DistillationPlugin", "load_teacher_checkpoint"]

PREVIOUS = "previous"


def _is_multitask(model) -> bool:
    from avalanche.models import MultiTaskModule

    return isinstance(model, MultiTaskModule)


def _clear_hooks(module: nn.Module) -> nn.Module:
    """Drop forward hooks a deep copy inherited from the original (e.g. a student's feature taps)."""
    for m in module.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    return module


def load_teacher_checkpoint(model: nn.Module, path: str) -> nn.Module:
    """Load the weights at ``path`` into ``model`` (``torch.load(weights_only=True)``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"teacher={path!r}: expected a state_dict in the checkpoint, got {type(state).__name__}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"teacher={path!r}: the checkpoint does not fit a copy of the student "
            f"({type(model).__name__}); a checkpoint teacher must have the student's architecture: {e}"
        ) from None
    return model


class _PendingState(nn.Module):
    """Holds a saved teacher ``state_dict`` until the student's architecture is known."""

    def __init__(self):
        super().__init__()
        self.saved = None

    def load_state_dict(self, state, strict=True, assign=False):  # noqa: D102
        self.saved = dict(state)


class DistillationPlugin(KTAPlugin):
    """Base plugin: keeps the teacher, its classes and the feature taps; subclasses add a loss.

    Subclasses implement :meth:`distillation_loss` (the term added to
    ``strategy.loss`` in ``before_backward``) and may set ``feature_layers=True``
    to get ``student_layer`` / ``teacher_layer`` taps, read with
    :meth:`features`.

    Args:
        teacher: an ``nn.Module``, a checkpoint path, or ``"previous"`` (default).
        student_layer: module name of the student whose output is distilled
            (feature losses only).
        teacher_layer: module name in the teacher. Required when the teacher is a module whose
            module names or types differ from the student's along ``student_layer`` (checked before
            the first step); otherwise it defaults to ``student_layer``.
        cache_teacher: compute the teacher's outputs (and tapped feature) once per experience and
            look them up per sample (default False); only when the data is batched as tensors (no
            transform, no augmentation), else the teacher runs on every minibatch.
    """

    state_attrs: Sequence[str] = ("teacher", "teacher_classes")
    feature_layers = False

    def __init__(self, teacher: Union[str, nn.Module] = PREVIOUS, student_layer: Optional[str] = None,
                 teacher_layer: Optional[str] = None, cache_teacher: bool = False):
        super().__init__()
        check_type("teacher", teacher, (str, nn.Module))
        #: run the (fixed) teacher once per experience and look its outputs up per sample
        #: (:mod:`kta_plugins.distill.cache`; settable on any distiller: ``kd.cache_teacher = True``)
        self.cache_teacher = check_type("cache_teacher", cache_teacher, bool)
        self._teacher_cache = None
        self.teacher: Optional[nn.Module] = None
        self.teacher_path: Optional[str] = None
        if isinstance(teacher, nn.Module):
            self.teacher_source = "module"
            self.teacher = frozen_copy(teacher)
        elif teacher == PREVIOUS:
            self.teacher_source = PREVIOUS
        else:
            if not teacher or not os.path.isfile(teacher):
                raise ValueError(
                    f"teacher must be an nn.Module, 'previous' or the path of a checkpoint file; "
                    f"no file at {teacher!r}"
                )
            self.teacher_source = "checkpoint"
            self.teacher_path = teacher
        if self.feature_layers:
            check_type("student_layer", student_layer, str)
            check_type("teacher_layer", teacher_layer, str, allow_none=True)
            if not student_layer:
                raise ValueError("student_layer must name a module of the student, got ''")
            if self.teacher is not None:
                resolve_module(self.teacher, teacher_layer or student_layer, argument="teacher_layer")
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer or student_layer
        self._teacher_layer_given = teacher_layer is not None
        #: classes the teacher has seen, per task label (only for teacher="previous")
        self.teacher_classes: Optional[Dict[int, List[int]]] = None
        self._student_tap: Optional[FeatureTap] = None
        self._teacher_tap: Optional[FeatureTap] = None
        self._tapped_teacher: Optional[nn.Module] = None

    # ------------------------------------------------------------ state
    def build_state_module(self, name: str, state: dict) -> nn.Module:
        if name == "teacher":
            return _PendingState()  # rebuilt from the student's architecture in before_training
        return super().build_state_module(name, state)

    def __getstate__(self):  # taps hold hook handles; they are re-attached on the next experience
        state = self.__dict__.copy()
        state.update(_student_tap=None, _teacher_tap=None, _tapped_teacher=None, _teacher_cache=None)
        return state

    # ------------------------------------------------------------ teacher
    def _materialize_teacher(self, strategy):
        if isinstance(self.teacher, _PendingState):
            saved = self.teacher.saved
            self.teacher = _clear_hooks(frozen_copy(strategy.model))
            self.teacher.load_state_dict(saved)
        elif self.teacher is None and self.teacher_source == "checkpoint":
            self.teacher = load_teacher_checkpoint(_clear_hooks(frozen_copy(strategy.model)), self.teacher_path)
        if self.teacher is not None:
            self.teacher.to(strategy.device).eval()

    def _teacher_forward(self, x, task_labels):
        """Teacher outputs for ``x`` (no gradient), for feature taps.

        A multi-head teacher runs one head for the whole batch: the batch's task
        when it is a single task the teacher knows, else the first task it knows
        (the tapped layer is assumed to be shared by the heads).
        """
        with torch.no_grad():
            if _is_multitask(self.teacher):
                known = sorted(getattr(self.teacher, "known_train_tasks_labels", ())) or [0]
                task = known[0]
                if task_labels is not None:
                    tasks = torch.unique(task_labels).tolist()
                    if len(tasks) == 1 and tasks[0] in known:
                        task = tasks[0]
                return self.teacher.forward_single_task(x, int(task))
            return self.teacher(x)

    def logit_pairs(self, strategy) -> List[tuple]:
        """``[(student_logits, teacher_logits, columns)]`` on the teacher's classes, one per head.

        ``columns`` lists the student's output indices used (the classes the teacher knows).
        """
        student, x = strategy.model, strategy.mb_x
        s_multi, t_multi = _is_multitask(student), _is_multitask(self.teacher)
        if s_multi != t_multi:
            raise ValueError(
                f"teacher and student must both be multi-head (MultiTaskModule) or both single-head; "
                f"teacher is {type(self.teacher).__name__}, student is {type(student).__name__}"
            )
        if not s_multi:
            hit = teacher_outputs(self, strategy, x)  # None unless cache_teacher
            if hit is not None:
                t_out = hit[0]
            else:
                with torch.no_grad():
                    t_out = self.teacher(x)
            return [self._restrict(strategy.mb_output, t_out, self._classes_of(None))]
        with torch.no_grad():
            t_all = self.teacher(x, None)  # every head the teacher knows
        pairs = []
        for tid, t_out in sorted(t_all.items()):
            if self.teacher_classes is not None and tid not in self.teacher_classes:
                continue
            # another head of the student on the same inputs: a scoped extra forward (taps untouched)
            s_out, _ = extra_forward(strategy, x, torch.full((len(x),), int(tid), dtype=torch.long, device=x.device))
            pairs.append(self._restrict(s_out, t_out, self._classes_of(tid)))
        return pairs

    def _classes_of(self, task: Optional[int]):
        if self.teacher_classes is None:
            return None
        if task is None:
            return sorted({c for cs in self.teacher_classes.values() for c in cs})
        return self.teacher_classes.get(task)

    @staticmethod
    def _restrict(s_out, t_out, classes):
        n_t, n_s = t_out.shape[1], s_out.shape[1]
        if n_s < n_t:
            raise ValueError(
                f"the teacher outputs {n_t} classes but the student only {n_s}; "
                "the student must output at least the teacher's classes"
            )
        cols = list(range(n_t)) if classes is None else [c for c in classes if c < n_t]
        idx = torch.tensor(cols, device=s_out.device, dtype=torch.long)
        return s_out.index_select(1, idx), t_out.index_select(1, idx.to(t_out.device)), cols

    @staticmethod
    def remap_targets(y: torch.Tensor, cols: Sequence[int]) -> torch.Tensor:
        """Targets as indices into ``cols``; ``-1`` for a class the teacher does not know."""
        table = torch.full((max(max(cols), int(y.max())) + 1,), -1, dtype=torch.long, device=y.device)
        table[torch.tensor(cols, device=y.device)] = torch.arange(len(cols), device=y.device)
        return table[y]

    # ------------------------------------------------------------ features
    def features(self, strategy) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(student_feature, teacher_feature)`` for the current minibatch, shapes checked by the subclass."""
        if self._student_tap is None:
            raise RuntimeError(f"{type(self).__name__}: no student tap; features are read during training only")
        hit = teacher_outputs(self, strategy, strategy.mb_x)  # None unless cache_teacher
        if hit is not None:
            return self._student_tap[self.student_layer], hit[1]
        if self._tapped_teacher is not self.teacher:
            if self._teacher_tap is not None:
                self._teacher_tap.remove()
            self._teacher_tap = FeatureTap(self.teacher, [self.teacher_layer], detach=True)
            self._tapped_teacher = self.teacher
        self._teacher_forward(strategy.mb_x, strategy.mb_task_id)
        return self._student_tap[self.student_layer], self._teacher_tap[self.teacher_layer]

    def _attach_student_tap(self, strategy):
        if self.feature_layers and self._student_tap is None:
            resolve_module(strategy.model, self.student_layer, argument="student_layer")
            self._student_tap = FeatureTap(strategy.model, [self.student_layer])

    def _detach_student_tap(self):
        if self._student_tap is not None:
            self._student_tap.remove()
            self._student_tap = None

    # ------------------------------------------------------------ hooks
    def before_training(self, strategy, **kwargs):
        if isinstance(self.teacher, _PendingState):
            # a restored "previous" teacher is rebuilt from the student's architecture at
            # before_training_exp: by then plugins that rewrite layers (LoRA, adapters) have run
            return
        self._materialize_teacher(strategy)
        if self.feature_layers and self.teacher is not None:
            resolve_module(self.teacher, self.teacher_layer, argument="teacher_layer")
        if self.feature_layers:
            resolve_module(strategy.model, self.student_layer, argument="student_layer")
            self._check_teacher_layer(strategy.model)

    def _check_teacher_layer(self, student: nn.Module) -> None:
        """Without ``teacher_layer``, a teacher module must have the student's module names and types
        along ``student_layer`` (its ancestors, itself, its submodules): the name could otherwise mean
        another layer of it. Other parts may differ (a head replaced by a continual-learning plugin)."""
        if getattr(self, "_teacher_layer_given", True) or self.teacher_source != "module":
            return  # "previous" and checkpoint teachers are copies of the student's architecture

        layer = self.student_layer

        def on_path(name):
            return name == "" or name == layer or layer.startswith(name + ".") or name.startswith(layer + ".")

        def layout(model):  # KTA's LoRA / adapter wrappers count as the layer they wrap
            out, wrapped = [], []
            for name, m in model.named_modules():
                if not on_path(name) or any(name.startswith(w + ".") for w in wrapped):
                    continue
                base = getattr(m, "base", None)
                if type(m).__module__ == "kta_plugins.nn.lora" and isinstance(base, nn.Module):
                    wrapped.append(name)
                    m = base
                out.append((name, type(m).__name__))
            return out

        if layout(self.teacher) != layout(student):
            raise ValueError(
                f"{type(self).__name__}: teacher_layer is required: the teacher "
                f"({type(self.teacher).__name__}) does not have the student's architecture "
                f"({type(student).__name__}) along {layer!r}, so student_layer={layer!r} may name another layer "
                f"in it; pass teacher_layer=<the teacher's module to distil from>"
            )

    def before_training_exp(self, strategy, **kwargs):
        self._materialize_teacher(strategy)
        self._attach_student_tap(strategy)
        self._teacher_cache = None  # new data, maybe a new teacher ("previous"): rebuilt on first use

    #: name of the plugin's term in the strategy's loss ledger (logged as ``train/loss/<term>``)
    loss_term = "distill"

    def before_backward(self, strategy, **kwargs):
        if self.teacher is None:
            return  # teacher="previous" during the first experience
        add_loss_term(strategy, self.loss_term, self.distillation_loss(strategy), owner=self)

    def distillation_loss(self, strategy) -> torch.Tensor:
        """The term added to the strategy's loss ledger (subclasses)."""
        raise NotImplementedError

    def after_training_exp(self, strategy, **kwargs):
        self._detach_student_tap()
        if self.teacher_source != PREVIOUS:
            return
        self.teacher = _clear_hooks(frozen_copy(strategy.model, device=strategy.device))
        seen = dict(self.teacher_classes or {})
        exp = strategy.experience
        tasks = list(getattr(exp, "task_labels", None) or [0])
        for t in tasks:
            seen[int(t)] = sorted(set(seen.get(int(t), [])) | {int(c) for c in exp.classes_in_this_experience})
        self.teacher_classes = seen

    def after_training(self, strategy, **kwargs):
        self._detach_student_tap()
