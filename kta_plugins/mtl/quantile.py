"""Quantile regression heads: estimate the distribution of a regression target (Koenker & Bassett 1978).

A regression task gets a :class:`~kta_plugins.nn.multitask.QuantileHead` that
predicts ``Q`` quantiles ``q_1 <= ... <= q_Q`` of its target at the levels
``tau_1 < ... < tau_Q`` (e.g. 0.1, 0.5, 0.9), trained with the pinball
(check) loss of Koenker & Bassett (1978), "Regression Quantiles",
*Econometrica* 46(1):

    ``rho_tau(u) = max(tau * u, (tau - 1) * u)``,   ``u = y - q_tau``

    ``L = (1 / B) sum_b sum_k rho_{tau_k}(y_b - q_{b,k})``

(the training loss of :class:`strategies.multitask.MultiTask`: summed over the
``Q`` levels, so each quantile weighs like one task next to the other tasks'
losses; averaged over the ``B`` samples).

Its minimiser over ``q`` is the ``tau``-quantile of ``y`` given the input.
Under-prediction (``u > 0``) is charged ``tau`` per unit, over-prediction
``1 - tau``: the gradient w.r.t. ``q`` is ``-tau`` below the target and
``1 - tau`` above it.

How to use it (the data stay plain regression tasks; the model decides to
predict quantiles):

* Python: build any multi-task model with ``quantiles=`` (levels for every
  regression task, or ``{task: levels}``) and train it with
  :class:`strategies.multitask.MultiTask`, which uses the pinball loss for
  the quantile heads; or pass ``quantiles=`` to ``MultiTask`` when it builds
  the model from a single-output backbone.
* Command line: ``kta run --scenario stars --strategy quantile`` (the
  ``multitask`` strategy with quantile heads on every regression task;
  options ``quantiles=[0.05,0.5,0.95]``, ``monotone=False``).

Evaluation (per quantile task, besides MAE and R^2 of the median, i.e. the
level closest to 0.5): ``Coverage`` (share of targets inside
``[q_1, q_Q]``; ``tau_Q - tau_1`` = 0.8 when calibrated for 0.1 / 0.9),
``Pinball`` (the mean of ``rho`` over samples *and* levels, comparable across
``Q``) and ``Crossing`` (share of samples whose
quantiles are not non-decreasing; 0 by construction with the default
``monotone=True`` head).

Example:
    >>> from kta_plugins.nn.multitask import HardSharing
    >>> net = HardSharing(bm.tasks, input_shape=bm.input_shape, quantiles=(0.1, 0.5, 0.9))
    >>> s = MultiTask(model=net, optimizer=torch.optim.Adam(net.parameters(), 3e-3), train_epochs=20)
    >>> s.train(bm.train_stream[0]); s.eval(bm.test_stream)["MTL/Coverage/test_stream/size"]
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..nn.multitask import QuantileHead, check_quantiles, model_quantiles, resolve_quantiles

__all__ = ["pinball_loss", "interval_coverage", "crossing_rate", "median_index", "quantile_sums",
           "QuantileHead", "check_quantiles", "resolve_quantiles", "model_quantiles"]


def _check_pred(pred: torch.Tensor, y: torch.Tensor, levels: tuple, task: str = "") -> None:
    where = f"task {task!r}: " if task else ""
    if pred.ndim != 2 or pred.shape[1] != len(levels):
        raise ValueError(f"{where}expected quantile predictions of shape (batch, {len(levels)}), "
                         f"got {tuple(pred.shape)}")
    if y.shape != pred.shape[:1]:
        raise ValueError(f"{where}target shape {tuple(y.shape)} does not match the batch of the "
                         f"predictions {tuple(pred.shape)}")


def pinball_loss(pred: torch.Tensor, y: torch.Tensor, quantiles: Sequence[float], reduction: str = "mean",
                 task: str = "") -> torch.Tensor:
    """Pinball loss ``rho_tau(y - q) = max(tau u, (tau - 1) u)``.

    Args:
        pred: ``(batch, Q)`` predicted quantiles.
        y: ``(batch,)`` targets.
        quantiles: the ``Q`` levels.
        reduction: ``"mean"`` (over batch and levels), ``"sum"`` or ``"none"`` (``(batch, Q)``).
        task: task name for error messages.
    """
    levels = check_quantiles(quantiles)
    _check_pred(pred, y, levels, task)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    tau = torch.tensor(levels, dtype=pred.dtype, device=pred.device)
    u = y.to(pred.dtype).unsqueeze(1) - pred
    loss = torch.maximum(tau * u, (tau - 1) * u)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def interval_coverage(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Share of targets with ``q_1 <= y <= q_Q`` (the outermost predicted quantiles, as given)."""
    if pred.ndim != 2 or y.shape != pred.shape[:1]:
        raise ValueError(f"expected pred (batch, Q) and y (batch,), got {tuple(pred.shape)} and {tuple(y.shape)}")
    y = y.to(pred.dtype)
    return float(((pred[:, 0] <= y) & (y <= pred[:, -1])).float().mean())


def crossing_rate(pred: torch.Tensor) -> float:
    """Share of samples whose predicted quantiles decrease somewhere (``q_{k+1} < q_k``)."""
    if pred.ndim != 2:
        raise ValueError(f"expected pred (batch, Q), got {tuple(pred.shape)}")
    if pred.shape[1] < 2:
        return 0.0
    return float((pred.diff(dim=1) < 0).any(1).float().mean())


def median_index(quantiles: Sequence[float]) -> int:
    """Index of the level closest to 0.5 (the point prediction behind MAE and R^2)."""
    levels = check_quantiles(quantiles)
    return min(range(len(levels)), key=lambda k: abs(levels[k] - 0.5))


def quantile_sums(pred: torch.Tensor, y: torch.Tensor, quantiles: Sequence[float]) -> dict:
    """Sums over a batch from which the evaluation metrics are pooled: ``covered``, ``pinball``
    (per-sample mean over levels, summed), ``crossed``, and ``abs`` / ``sq`` of the median's error."""
    levels = check_quantiles(quantiles)
    _check_pred(pred, y, levels)
    y = y.to(pred.dtype)
    med = pred[:, median_index(levels)]
    n = len(y)
    return {"covered": interval_coverage(pred, y) * n, "crossed": crossing_rate(pred) * n,
            "pinball": float(pinball_loss(pred, y, levels, reduction="none").mean(1).sum()),
            "abs": float((med - y).abs().sum()), "sq": float(((med - y) ** 2).sum())}
