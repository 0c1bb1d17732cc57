"""What the multi-task plugins share: the loss terms of a minibatch and the gradients w.r.t. shared parts.

:func:`loss_terms` returns the terms a plugin weights or arbitrates between:

* with :class:`strategies.multitask.MultiTask` (any strategy exposing a
  non-empty ``strategy.task_losses`` dict): one term per task;
* with any other strategy (M9, the terms a continual strategy sums):
  ``new`` (the criterion on the minibatch samples whose class is in the
  current experience), ``replay`` (the criterion on the other samples, e.g.
  those a replay buffer mixed in), and ``regularizers`` (everything plugins
  added to ``strategy.loss`` after the criterion: distillation, EWC, L2-SP...).
  The split assumes a mean-reduced criterion (cross-entropy): each part is
  scaled by its share of the minibatch, so the terms sum to the original loss.

Whatever is in ``strategy.loss`` and not in the terms (``rest``, e.g. the
soft-sharing penalty under ``MultiTask``) is kept unweighted. The terms are read
from the strategy's loss ledger (:mod:`kta_plugins.compose`) when the strategy
finalizes the loss, after every plugin added its terms, so weighting and surgery
plugins may stand anywhere in the ``plugins`` list.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn

from ..base import KTAPlugin, check_choice, check_type
from ..compose import finalize_loss, loss_ledger
from ..nn.tap import FeatureTap, resolve_module

__all__ = ["loss_terms", "SharedGradients", "task_gradients", "redirect_gradient", "apply_weights",
           "ArbitratingPlugin", "SharedGradientPlugin"]


def loss_terms(strategy):
    """``(names, losses, kinds, rest)`` of the current minibatch (see the module docstring).

    ``kinds[k]`` is ``"regression"`` or ``"classification"``; ``rest`` is the
    part of ``strategy.loss`` outside the terms.
    """
    task_losses = getattr(strategy, "task_losses", None)
    if isinstance(task_losses, dict) and task_losses:
        tasks = getattr(strategy, "tasks", None) or {}
        names = list(task_losses)
        losses = [task_losses[n] for n in names]
        kinds = ["regression" if tasks.get(n) == "regression" else "classification" for n in names]
        return names, losses, kinds, strategy.loss - sum(losses)
    out, y = strategy.mb_output, strategy.mb_y
    # the criterion's weight in the ledger (re-weighted by e.g. KD's 1 - alpha); 1 for a bare
    # stand-in of a strategy (TaskAffinity's lookahead passes one)
    w = loss_ledger(strategy).weight("criterion") if hasattr(strategy, "clock") else 1.0

    def criterion(o, t):
        return w * strategy._criterion(o, t)

    base = criterion(out, y)
    classes = getattr(getattr(strategy, "experience", None), "classes_in_this_experience", None)
    names, losses = [], []
    new = None
    if classes and y.dtype in (torch.int64, torch.int32):
        new = torch.isin(y, torch.as_tensor(sorted(int(c) for c in classes), device=y.device))
    if new is None or bool(new.all()):
        names, losses = ["new"], [base]
    elif not bool(new.any()):
        names, losses = ["replay"], [base]
    else:
        n = len(y)
        n_new = int(new.sum())
        names = ["new", "replay"]
        losses = [criterion(out[new], y[new]) * (n_new / n), criterion(out[~new], y[~new]) * ((n - n_new) / n)]
    reg = strategy.loss - base
    if isinstance(reg, torch.Tensor) and reg.requires_grad and float(reg.detach().abs()) > 0:
        names.append("regularizers")
        losses.append(reg)
    return names, losses, ["classification"] * len(names), strategy.loss - sum(losses)


def apply_weights(strategy, losses, weights, rest) -> None:
    """``strategy.loss = rest + sum_k weights[k] * losses[k]``."""
    strategy.loss = rest + sum(w * l for w, l in zip(weights, losses))


def task_gradients(losses, tensors) -> torch.Tensor:
    """``(K, D)``: row ``k`` is ``d losses[k] / d tensors`` flattened (zeros where unused)."""
    rows = []
    for loss in losses:
        if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
            rows.append(torch.cat([torch.zeros_like(t).reshape(-1) for t in tensors]))
            continue
        grads = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(t)).reshape(-1)
                               for g, t in zip(grads, tensors)]))
    return torch.stack(rows)


def redirect_gradient(strategy, tensors, current: torch.Tensor, wanted: torch.Tensor) -> None:
    """Make ``strategy.loss``'s gradient w.r.t. ``tensors`` move from ``current`` to ``wanted``
    (flattened), leaving its value and every other gradient unchanged.

    The effect of adding ``<t, wanted - current> - stop_gradient(<t, wanted - current>)``, as one
    autograd node (:class:`_RedirectGradient`) instead of three per tensor.
    """
    delta = (wanted - current).detach()
    strategy.loss = _RedirectGradient.apply(strategy.loss, delta, *tensors)


class _RedirectGradient(torch.autograd.Function):
    """``loss`` unchanged forward; backward: ``loss``'s gradient ``g`` passes on, and each tensor
    ``t_i`` receives ``g * delta_i`` (its slice of the flattened ``delta``)."""

    @staticmethod
    def forward(ctx, loss, delta, *tensors):
        ctx.shapes = [t.shape for t in tensors]
        ctx.save_for_backward(delta)
        return loss.clone()

    @staticmethod
    def backward(ctx, g_out):
        (delta,) = ctx.saved_tensors
        g = g_out.sum()  # the loss is a scalar (shape () or Avalanche's (1,))
        grads, offset = [], 0
        for shape in ctx.shapes:
            n = shape.numel()
            grads.append(g * delta[offset:offset + n].view(shape))
            offset += n
        return (g_out, None, *grads)


class SharedGradients:
    """The tensors w.r.t. which per-task gradients are taken: the parameters of the shared module
    (``wrt="parameters"``) or its output, read with a :class:`~kta_plugins.nn.FeatureTap`
    (``wrt="representation"``, cheaper: MGDA-UB's choice).

    Args:
        shared: the shared module's name in ``model.named_modules()`` (default ``"features"``:
            the trunk of :class:`~kta_plugins.nn.multitask.HardSharing` and of KTA's backbones).
        wrt: ``"parameters"`` or ``"representation"``.
    """

    def __init__(self, shared: str = "features", wrt: Literal["parameters", "representation"] = "parameters"):
        self.shared = check_type("shared", shared, str)
        self.wrt = check_choice("wrt", wrt, ("parameters", "representation"))
        self.tap: Optional[FeatureTap] = None
        self.params: list = []

    def attach(self, model: nn.Module) -> None:
        module = resolve_module(model, self.shared, argument="shared")
        self.detach()
        if self.wrt == "representation":
            self.tap = FeatureTap(model, [self.shared])
        else:
            self.params = list(module.parameters())
            if not self.params:
                raise ValueError(f"shared={self.shared!r} has no parameters")

    def tensors(self) -> list:
        """The shared tensors; for parameters, those trainable now (a freezing plugin such as LP-FT
        may freeze the shared part for a while: then there is nothing to arbitrate, ``[]``)."""
        if self.wrt == "parameters":
            return [p for p in self.params if p.requires_grad]
        if self.tap is None:
            raise RuntimeError("SharedGradients.attach(model) must run before tensors()")
        z = self.tap[self.shared]
        if not isinstance(z, torch.Tensor):
            raise ValueError(f"shared={self.shared!r} outputs {type(z).__name__}, not one tensor; "
                             "use wrt='parameters'")
        return [z]

    def detach(self) -> None:
        if self.tap is not None:
            self.tap.remove()
            self.tap = None
        self.params = []

    def __getstate__(self):
        return {"shared": self.shared, "wrt": self.wrt, "tap": None, "params": []}


class ArbitratingPlugin(KTAPlugin):
    """Base of the plugins that re-weight or arbitrate between the loss terms (multi-task
    weighting, gradient surgery). They act in ``finalize_loss``, which a composing strategy
    (:class:`kta_plugins.compose.ComposeMixin`) calls just before backward, after every plugin
    added its terms, whatever the order of the plugins; on a plain Avalanche template they act in
    their own ``before_backward`` (list order). One such plugin per strategy: two would each
    rewrite the same terms, so a second one is refused before training."""

    loss_stage = "arbitrate"
    exclusive_role = "loss-arbitration"

    def before_backward(self, strategy, **kwargs):
        finalize_loss(self, strategy)

    def finalize_loss(self, strategy) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class SharedGradientPlugin(ArbitratingPlugin):
    """Base of the gradient-surgery plugins (PCGrad, MGDA, CAGrad): holds their
    :class:`SharedGradients` and attaches it to the model for each experience."""

    def __init__(self, shared: str = "features", wrt: str = "parameters"):
        super().__init__()
        self.grads = SharedGradients(shared, wrt)

    def before_training_exp(self, strategy, **kwargs):
        self.grads.attach(strategy.model)

    def after_training_exp(self, strategy, **kwargs):
        self.grads.detach()
