"""Forgetting vs. concept drift: why accuracy on an old experience fell.

On a stream whose labels drift (:mod:`scenarios.drift`), the final model losing
accuracy on an earlier experience ``j`` under ``j``'s labels is not necessarily
forgetting: for the inputs whose label changed, getting the old label wrong is the
*expected* consequence of following the new concept. Chaudhry et al.'s forgetting
(:func:`strategies.results.forgetting`) mixes both. This module separates them.

For an earlier experience ``j``, with ``y_old`` the labels of its test inputs under
concept ``j``, ``y_new`` their labels under the final concept, ``p_j`` the predictions
of the model right after training ``j`` and ``p_T`` those of the final model, split the
inputs into ``U`` (``y_old == y_new``, label unchanged) and ``C`` (label changed):

    forgetting_j = acc(p_j, y_old | U) - acc(p_T, y_old | U)     (real forgetting)
    drift_j      = acc(p_j, y_old | C) - acc(p_T, y_old | C)     (expected: the concept moved)
    adaptation_j = acc(p_T, y_new | C)                           (the final model follows the new concept)

and the whole drop of accuracy under the old concept adds up exactly:

    acc(p_j, y_old) - acc(p_T, y_old) = |U|/n * forgetting_j + |C|/n * drift_j

(``forgetting part`` and ``drift part`` below). Means over ``j < T`` skip the NaNs of
empty subsets (``drift_j`` is NaN when no label of ``j`` changed).

Example:
    >>> from scenarios.drift import drift_stream
    >>> bm = drift_stream("digits", n_experiences=5, drift="sudden", seed=0)
    >>> A, split = train_with_drift_split(strategy, bm)      # strategy: any KTA / Avalanche strategy
    >>> print(format_drift(split))
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from .results import accuracy_row

__all__ = ["forgetting_vs_drift", "drift_split", "predict", "train_with_drift_split", "format_drift"]

_KEYS = ("drop", "forgetting_part", "drift_part", "forgetting", "drift", "adaptation", "changed_fraction")


def _acc(pred, y, mask) -> float:
    return float((pred[mask] == y[mask]).mean()) if mask.any() else float("nan")


def forgetting_vs_drift(y_old, y_new, pred_before, pred_after) -> dict:
    """Split one earlier experience's accuracy drop into forgetting and drift (module docstring).

    Args:
        y_old: labels of the experience's test inputs under its own (old) concept.
        y_new: labels of the same inputs under the final concept.
        pred_before: predictions of the model right after training on the experience.
        pred_after: predictions of the final model.

    Returns:
        ``drop`` (old-concept accuracy before minus after), ``forgetting_part`` + ``drift_part``
        (= ``drop``), ``forgetting`` (within unchanged inputs), ``drift`` (within changed inputs),
        ``adaptation`` (final accuracy on changed inputs under the new concept), ``changed_fraction``.
        Fractions in [0, 1]; NaN where a subset is empty.
    """
    arrays = [np.asarray(torch.as_tensor(a).cpu()) for a in (y_old, y_new, pred_before, pred_after)]
    for name, a in zip(("y_old", "y_new", "pred_before", "pred_after"), arrays):
        if a.ndim != 1 or len(a) != len(arrays[0]):
            raise ValueError(f"{name} must be 1-D with {len(arrays[0])} entries (like y_old), got shape {a.shape}")
    if len(arrays[0]) == 0:
        raise ValueError("y_old is empty")
    y_old, y_new, pb, pa = arrays
    changed = y_old != y_new
    unchanged = ~changed
    w_c = float(changed.mean())
    forgetting = _acc(pb, y_old, unchanged) - _acc(pa, y_old, unchanged)
    drift = _acc(pb, y_old, changed) - _acc(pa, y_old, changed)
    return {
        "drop": float((pb == y_old).mean() - (pa == y_old).mean()),
        "forgetting_part": (1 - w_c) * forgetting if unchanged.any() else 0.0,
        "drift_part": w_c * drift if changed.any() else 0.0,
        "forgetting": forgetting, "drift": drift, "adaptation": _acc(pa, y_new, changed),
        "changed_fraction": w_c,
    }


def drift_split(test_labels: Sequence, predictions_after_each: Sequence, final_predictions: Sequence) -> dict:
    """:func:`forgetting_vs_drift` for every earlier experience ``j < T`` and their means.

    Args:
        test_labels: ``test_labels[j]``: labels of experience ``j``'s test inputs under concept ``j``;
            the last entry is the final concept. All experiences share the same test inputs
            (as in :func:`scenarios.drift.drift_stream`).
        predictions_after_each: ``[j]``: predictions on those inputs right after training ``j``.
        final_predictions: predictions of the final model on those inputs.

    Returns:
        ``{"per_experience": [dict, ...], "mean": dict}`` (keys as :func:`forgetting_vs_drift`).
    """
    T = len(test_labels) - 1
    if T < 1:
        raise ValueError("test_labels needs at least two concepts (an earlier experience and the final one)")
    if len(predictions_after_each) < T:
        raise ValueError(f"predictions_after_each needs {T} entries (one per earlier experience), "
                         f"got {len(predictions_after_each)}")
    per = [forgetting_vs_drift(test_labels[j], test_labels[T], predictions_after_each[j], final_predictions)
           for j in range(T)]
    with warnings.catch_warnings():  # all-NaN columns (no changed label anywhere) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = {k: float(np.nanmean([p[k] for p in per])) for k in _KEYS}
    return {"per_experience": per, "mean": mean}


def predict(model: torch.nn.Module, x: torch.Tensor, device="cpu", batch_size: int = 1024) -> torch.Tensor:
    """Arg-max predictions of ``model`` on ``x`` (eval mode, task label 0; the model's mode is restored)."""
    from kta_plugins.transfer.transferability import extract

    x = x.to(device)
    t = torch.zeros(len(x), dtype=torch.long, device=x.device)
    return extract(model, x, None, batch_size, t)[1].argmax(1).cpu()


def train_with_drift_split(strategy, benchmark):
    """Train over a drift stream, evaluating the whole test stream after each experience.

    Returns ``(A, split)``: the accuracy matrix (as :func:`strategies.results.train_and_evaluate`)
    and :func:`drift_split` of the run. ``benchmark`` needs ``test_inputs`` and ``test_labels``
    (:func:`scenarios.drift.drift_stream`).
    """
    for attr in ("test_inputs", "test_labels"):
        if not hasattr(benchmark, attr):
            raise ValueError(f"benchmark has no {attr!r}: build it with scenarios.drift.drift_stream")
    n = len(benchmark.test_stream)
    rows, preds = [], []
    for exp in benchmark.train_stream:
        strategy.train(exp)
        rows.append(accuracy_row(strategy.eval(benchmark.test_stream), n))
        preds.append(predict(strategy.model, benchmark.test_inputs, strategy.device))
    return np.vstack(rows), drift_split(list(benchmark.test_labels), preds[:-1], preds[-1])


def format_drift(split: dict) -> str:
    """The per-experience split as a table (percentage points)."""
    def f(v):
        return "    n/a" if np.isnan(v) else f"{100 * v:+7.1f}"

    lines = ["old exp   changed   drop  = forgetting part + drift part   | forgetting  drift  adaptation"]
    rows = [(f"exp {j}", p) for j, p in enumerate(split["per_experience"])] + [("mean", split["mean"])]
    for name, p in rows:
        adapt = "    n/a" if np.isnan(p["adaptation"]) else f"{100 * p['adaptation']:7.1f}"
        lines.append(f"{name:<8}{100 * p['changed_fraction']:7.1f}%{f(p['drop'])}   {f(p['forgetting_part'])}"
                     f"         {f(p['drift_part'])}        | {f(p['forgetting'])}    {f(p['drift'])}  {adapt}")
    return "\n".join(lines)
