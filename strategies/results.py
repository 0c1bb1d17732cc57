"""Accuracy matrix, forgetting and backward transfer of a run over a stream."""
from __future__ import annotations

import re
from typing import Optional

import numpy as np

__all__ = ["accuracy_row", "average_accuracy", "forgetting", "bwt", "format_report", "format_loss_terms",
           "train_and_evaluate"]

_ACC = re.compile(r"^Top1_Acc_Exp/eval_phase/(?P<stream>[^/]+)/Task\d+/Exp(?P<exp>\d+)$")


def accuracy_row(metrics: dict, n_experiences: int, stream: str = "test_stream") -> np.ndarray:
    """Per-experience accuracies from the metrics dict that ``strategy.eval`` returns."""
    row = np.full(n_experiences, np.nan)
    for key, value in metrics.items():
        m = _ACC.match(key)
        if m and m["stream"] == stream and int(m["exp"]) < n_experiences:
            row[int(m["exp"])] = float(value)
    return row


def average_accuracy(A: np.ndarray) -> float:
    """Mean accuracy over all experiences after the last training step."""
    return float(np.nanmean(A[-1]))


def forgetting(A: np.ndarray) -> float:
    """Average forgetting (Chaudhry et al. 2018): mean over j < T of max_{i<T} A[i, j] - A[T, j].

    ``A[i, j]`` is the accuracy on experience ``j`` after training on
    experiences ``0..i``; ``T`` is the last row. NaN for a single experience.
    """
    A = np.asarray(A, dtype=float)
    T = A.shape[0] - 1
    if T < 1 or A.shape[1] < 2:
        return float("nan")
    return float(np.mean([A[:T, j].max() - A[T, j] for j in range(min(T, A.shape[1]))]))


def bwt(A: np.ndarray) -> float:
    """Backward transfer (Lopez-Paz & Ranzato 2017): mean over j < T of A[T, j] - A[j, j]."""
    A = np.asarray(A, dtype=float)
    T = A.shape[0] - 1
    if T < 1 or A.shape[1] < 2 or A.shape[0] != A.shape[1]:
        return float("nan")
    return float(np.mean([A[T, j] - A[j, j] for j in range(T)]))


def format_loss_terms(per_experience) -> str:
    """The mean loss terms of each training experience (``kta run``'s ledger table): one row per
    experience, one column per term (``criterion``, the plugins' terms, ``other`` for what non-KTA
    plugins added, ``total``); a term absent in an experience is ``-``."""
    names = []
    for row in per_experience:
        names += [n for n in row if n != "experience" and n not in names and n != "total"]
    names.append("total")
    width = max(9, *(len(n) + 1 for n in names))
    lines = ["Mean loss terms per training experience (weighted, as summed into the loss)",
             "exp " + "".join(f"{n:>{width}}" for n in names)]
    for row in per_experience:
        lines.append(f"{row['experience']:>3} " + "".join(
            f"{row[n]:>{width}.4f}" if n in row else f"{'-':>{width}}" for n in names))
    return "\n".join(lines)


def format_report(A: np.ndarray, title: Optional[str] = None, joint: bool = False) -> str:
    """The accuracy matrix (rows: trained up to experience i; columns: experience j) and summary.

    ``joint=True`` labels the single row of a joint-training run ``joint``.
    """
    A = np.asarray(A, dtype=float)
    lines = [title] if title else []
    head = "train\\eval " + "".join(f"{'exp' + str(j):>8}" for j in range(A.shape[1]))
    lines.append(head)
    for i, row in enumerate(A):
        label = "joint" if joint else f"exp {i}"
        lines.append(f"{label:<11}" + "".join(f"{100 * v:8.1f}" for v in row))
    lines.append(f"average accuracy {100 * average_accuracy(A):.1f}%   "
                 f"forgetting {_pct(forgetting(A))}   BWT {_pct(bwt(A))}")
    return "\n".join(lines)


def _pct(v: float) -> str:
    return "n/a" if np.isnan(v) else f"{100 * v:+.1f}%"


def train_and_evaluate(strategy, benchmark, joint: bool = False) -> np.ndarray:
    """Train over ``benchmark.train_stream``, evaluating the whole test stream after each experience.

    Returns the accuracy matrix ``A`` (``T x T``; ``1 x T`` when ``joint``).
    """
    n = len(benchmark.test_stream)
    rows = []
    if joint:
        strategy.train(benchmark.train_stream)
        rows.append(accuracy_row(strategy.eval(benchmark.test_stream), n))
    else:
        for exp in benchmark.train_stream:
            strategy.train(exp)
            rows.append(accuracy_row(strategy.eval(benchmark.test_stream), n))
    return np.vstack(rows)
