"""Transferability scores: LogME (You et al. 2021) and LEEP (Nguyen et al. 2020), and
choosing the best starting checkpoint for the next experience."""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

__all__ = ["logme", "leep", "extract", "score_model", "select_checkpoint"]


def _evidence(f: np.ndarray, y: np.ndarray, max_iter: int = 100, tol: float = 1e-5) -> float:
    """LogME for one target column ``y`` (n,), features ``f`` (n, d); normalised by n."""
    n, d = f.shape
    # SVD of F: F^T F = V diag(s^2) V^T
    u, s, vt = np.linalg.svd(f, full_matrices=False)
    sigma = s ** 2
    k = len(s)
    x = u.T @ y                       # projections of y on the left singular vectors, (k,)
    x2 = x ** 2
    res_x2 = max(float(y @ y - x2.sum()), 0.0)  # part of y outside the column space of F
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * x2 / (sigma + t) ** 2).sum())
        res2 = float((x2 / (1 + sigma / t) ** 2).sum()) + res_x2
        alpha_new = gamma / (m2 + 1e-12)
        beta_new = (n - gamma) / (res2 + 1e-12)
        converged = abs(alpha_new / beta_new - t) / t < tol
        alpha, beta = alpha_new, beta_new
        if converged:
            break
    t = alpha / beta
    m2 = float((sigma * x2 / (sigma + t) ** 2).sum())
    res2 = float((x2 / (1 + sigma / t) ** 2).sum()) + res_x2
    logdet = float(np.log(alpha + beta * sigma).sum()) + (d - k) * np.log(alpha)
    ev = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
          - beta / 2 * res2 - alpha / 2 * m2 - 0.5 * logdet)
    return float(ev / n)


def logme(features, labels) -> float:
    """LogME (You, Liu, Wang & Long, ICML 2021, "LogME: Practical Assessment of Pre-trained
    Models for Transfer Learning").

    For each class ``c``, the one-hot column ``y_c`` is modelled as
    ``y = F w + e`` with ``w ~ N(0, alpha^-1 I)``, ``e ~ N(0, beta^-1 I)``; the
    log evidence

        log p(y | F) = n/2 log beta + d/2 log alpha - n/2 log 2pi - beta/2 ||F m - y||^2
                       - alpha/2 ||m||^2 - 1/2 log det(alpha I + beta F^T F),
        m = beta (alpha I + beta F^T F)^-1 F^T y,

    is maximised over ``alpha, beta`` by the paper's fixed-point iteration. The
    score is the mean over classes of the maximum divided by ``n``. Higher means
    the features transfer better.

    Args:
        features: ``(n, d)`` array / tensor.
        labels: ``(n,)`` integer class labels.
    """
    f = np.asarray(torch.as_tensor(features).detach().cpu(), dtype=np.float64)
    y = np.asarray(torch.as_tensor(labels).detach().cpu()).astype(int)
    if f.ndim != 2 or y.ndim != 1 or len(f) != len(y):
        raise ValueError(f"features must be (n, d) and labels (n,), got {f.shape} and {y.shape}")
    classes = np.unique(y)
    return float(np.mean([_evidence(f, (y == c).astype(np.float64)) for c in classes]))


def leep(source_probs, labels) -> float:
    """LEEP (Nguyen, Hassner, Seeger & Archambeau, ICML 2020, "LEEP: A New Measure to Evaluate
    Transferability of Learned Representations").

    With ``theta(x)`` the source model's softmax over its ``Z`` labels:
    ``P(y, z) = 1/n sum_i theta_z(x_i) [y_i = y]``, ``P(y | z) = P(y, z) / P(z)``, and

        LEEP = 1/n sum_i log sum_z P(y_i | z) theta_z(x_i).

    Args:
        source_probs: ``(n, Z)`` probabilities (rows sum to 1).
        labels: ``(n,)`` target labels.
    """
    p = np.asarray(torch.as_tensor(source_probs).detach().cpu(), dtype=np.float64)
    y = np.asarray(torch.as_tensor(labels).detach().cpu()).astype(int)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"source_probs must be (n, Z) and labels (n,), got {p.shape} and {y.shape}")
    if not np.allclose(p.sum(1), 1.0, atol=1e-4) or (p < 0).any():
        raise ValueError("source_probs: rows must be probability distributions (apply softmax to logits)")
    classes, yi = np.unique(y, return_inverse=True)
    n = len(y)
    joint = np.zeros((len(classes), p.shape[1]))
    np.add.at(joint, yi, p)
    joint /= n
    cond = joint / joint.sum(0, keepdims=True).clip(min=1e-300)   # P(y | z)
    eep = (p * cond[yi]).sum(1)
    return float(np.mean(np.log(eep)))


@torch.no_grad()
def extract(model: nn.Module, x: torch.Tensor, layer: Optional[str] = None, batch_size: int = 256,
            task_labels: Optional[torch.Tensor] = None):
    """``(features, logits)`` of ``model`` on ``x`` in eval mode (the model's mode is restored);
    features are the output of module ``layer`` (flattened) read with :class:`kta_plugins.nn.FeatureTap`,
    ``None`` when no layer is given. ``task_labels`` (one per sample): forward through Avalanche's
    ``avalanche_forward``, as its strategies do (multi-head models pick their heads)."""
    from avalanche.models.utils import avalanche_forward

    from kta_plugins.nn.tap import FeatureTap

    was_training = model.training
    model.eval()
    tap = FeatureTap(model, [layer], detach=True) if layer is not None else None
    feats, logits = [], []
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            logits.append(model(xb) if task_labels is None else
                          avalanche_forward(model, xb, task_labels[i:i + batch_size]))
            if tap is not None:
                feats.append(tap[layer].flatten(1))
    finally:
        if tap is not None:
            tap.remove()
        model.train(was_training)
    return (torch.cat(feats) if feats else None), torch.cat(logits)


def _data(data):
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0], torch.as_tensor(data[1])
    dataset = getattr(data, "dataset", data)  # an experience or a dataset
    from scenarios.loaders import tensor_view

    fields = tensor_view(dataset)
    if fields is None:
        loader = torch.utils.data.DataLoader(dataset, batch_size=len(dataset))
        fields = list(next(iter(loader)))
    return fields[0], fields[1]


def score_model(model: nn.Module, data, metric: str = "logme", layer: Optional[str] = "features") -> float:
    """LogME of the ``layer`` features or LEEP of the softmax outputs of ``model`` on ``data``
    (an experience, a dataset, or an ``(x, y)`` pair)."""
    if metric not in ("logme", "leep"):
        raise ValueError(f"metric must be 'logme' or 'leep', got {metric!r}")
    x, y = _data(data)
    feats, logits = extract(model, x, layer if metric == "logme" else None)
    if metric == "logme":
        if feats is None:
            raise ValueError("layer: LogME needs a feature layer name")
        return logme(feats, y)
    return leep(torch.softmax(logits.double(), dim=1), y)


def select_checkpoint(candidates: Mapping[str, Union[nn.Module, str, dict]], data, metric: str = "logme",
                      layer: Optional[str] = "features", build: Optional[Callable[[], nn.Module]] = None):
    """Score every candidate starting point on ``data`` and return ``(best_name, scores)``.

    ``candidates`` maps names to models, to state dicts, or to checkpoint paths
    (loaded with ``torch.load(..., weights_only=True)``); state dicts and paths
    need ``build()``, which returns a fresh model to load them into.

    Example:
        >>> best, scores = select_checkpoint({"a": model_a, "b": "ckpt_b.pt"}, bm.train_stream[1],
        ...                                  metric="logme", layer="features", build=lambda: MLP((1, 8, 8), 10))
        >>> model.load_state_dict(...)  # start the next experience from `best`
    """
    if not candidates:
        raise ValueError("candidates must hold at least one model or checkpoint")
    scores: Dict[str, float] = {}
    for name, cand in candidates.items():
        if not isinstance(cand, nn.Module):
            if build is None:
                raise ValueError(f"candidates[{name!r}] is a checkpoint: pass build=, a function returning a model")
            state = torch.load(cand, map_location="cpu", weights_only=True) if isinstance(cand, str) else cand
            model = build()
            model.load_state_dict(state)
            cand = model
        scores[name] = score_model(cand, data, metric=metric, layer=layer)
    best = max(scores, key=scores.get)
    return best, scores
