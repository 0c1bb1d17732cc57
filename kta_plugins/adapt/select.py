"""Label-free model selection for unsupervised domain adaptation.

Picking a DA method's setting (its ``weight``, its schedule) with target labels
is what a user of *unsupervised* DA cannot do. These scores rank trained models
with labeled **source** data and **unlabeled** target inputs only:

``iwcv`` — importance-weighted cross-validation (Sugiyama, Krauledat & Müller 2007,
    "Covariate Shift Adaptation by Importance Weighted Cross Validation", JMLR):
    the target risk is estimated on held-out source samples, each loss weighted
    by the density ratio ``w(x) = p_t(x) / p_s(x)``. As in DEV, the ratio comes from
    a domain classifier (logistic regression) on the model's features, trained on
    the source training features (label 0) and the unlabeled target features
    (label 1): ``w = n_s/n_t * P(t|x) / P(s|x)``; the weights are self-normalised
    (mean 1 on the validation set). Lower risk = better.
``dev`` — deep embedded validation (You, Wang, Long & Jordan 2019, "Towards Accurate
    Model Selection in Deep Unsupervised Domain Adaptation", ICML): the same
    weighted losses ``L_i = w_i l_i`` with the control variate ``w``:
    ``risk = mean(L) + eta mean(w) - eta``, ``eta = -Cov(L, w) / Var(w)``. Lower = better.
``snd`` — soft neighborhood density (Saito et al. 2021, "Tune it the Right Way:
    Unsupervised Validation of Domain Adaptation via Soft Neighborhood Density",
    ICCV): L2-normalised target softmax vectors, their cosine similarities
    (self excluded) turned into a softmax per row with temperature 0.05, and the
    mean entropy of those rows. Higher = better.
``entropy`` — mean prediction entropy on the target (Morerio et al. 2018); lower = better.

No function here takes a target label: target data enter as inputs only.
:func:`select` picks, among already-trained candidates, the best by one score,
and :func:`score_model` computes every score of one model.

Example:
    >>> from kta_plugins.adapt.select import score_model, select
    >>> scores = [score_model(m, (xs_val, ys_val), xs_train, xt) for m in models]   # no target label
    >>> best = select(scores, "dev")          # index of the model with the lowest DEV risk
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["CRITERIA", "HIGHER_IS_BETTER", "importance_weights", "iwcv_risk", "dev_risk", "snd_score",
           "entropy_score", "score_model", "select", "select_setting"]

#: the label-free criteria :func:`score_model` computes
CRITERIA = ("iwcv", "dev", "snd", "entropy")
#: direction of each criterion (True: the highest score wins)
HIGHER_IS_BETTER = {"iwcv": False, "dev": False, "snd": True, "entropy": False}


def importance_weights(f_src_train: torch.Tensor, f_tgt: torch.Tensor, f_src_val: torch.Tensor,
                       l2: float = 1e-2, iters: int = 100) -> torch.Tensor:
    """Density ratios ``p_t / p_s`` at ``f_src_val`` from a logistic-regression domain classifier.

    The classifier is fit on the (standardised) source training features (0) and target features (1) with
    L-BFGS and an L2 penalty ``l2``; ``w = n_s / n_t * exp(logit)``. Deterministic (zero initialisation).
    """
    f_src_train, f_tgt, f_src_val = (t.detach().double() for t in (f_src_train, f_tgt, f_src_val))
    x = torch.cat([f_src_train, f_tgt])
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mu) / sd
    y = torch.cat([torch.zeros(len(f_src_train)), torch.ones(len(f_tgt))]).double()
    w = torch.zeros(x.shape[1], dtype=torch.double, requires_grad=True)
    b = torch.zeros(1, dtype=torch.double, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        z = ((f_src_val - mu) / sd) @ w + b
        return (len(f_src_train) / len(f_tgt) * torch.exp(z.clamp(-20, 20))).float()


def _losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y.long(), reduction="none")


def iwcv_risk(val_logits: torch.Tensor, val_y: torch.Tensor, weights: torch.Tensor) -> float:
    """Importance-weighted validation risk ``sum w_i l_i / sum w_i`` (self-normalised)."""
    l = _losses(val_logits, val_y)
    return float((weights * l).sum() / weights.sum().clamp_min(1e-12))


def dev_risk(val_logits: torch.Tensor, val_y: torch.Tensor, weights: torch.Tensor) -> float:
    """DEV: ``mean(w l) + eta mean(w) - eta`` with ``eta = -Cov(w l, w) / Var(w)`` (You et al. 2019, Alg. 1)."""
    l = _losses(val_logits, val_y).double()
    w = weights.double()
    wl = w * l
    var = w.var(unbiased=True)
    if float(var) <= 1e-12:
        return float(wl.mean())
    cov = ((wl - wl.mean()) * (w - w.mean())).sum() / (len(w) - 1)
    eta = -cov / var
    return float(wl.mean() + eta * w.mean() - eta)


def snd_score(tgt_logits: torch.Tensor, temperature: float = 0.05) -> float:
    """Soft neighborhood density (Saito et al. 2021): mean entropy of the softmax (temperature
    ``temperature``) over each target sample's cosine similarities to the others (self excluded)."""
    p = F.normalize(F.softmax(tgt_logits.float(), 1), dim=1)
    sim = p @ p.t()
    sim.fill_diagonal_(float("-inf"))
    q = F.softmax(sim / temperature, 1)
    return float(-(q * torch.log(q.clamp_min(1e-12))).sum(1).mean())


def entropy_score(tgt_logits: torch.Tensor) -> float:
    """Mean prediction entropy on the target."""
    p = F.softmax(tgt_logits.float(), 1)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(1).mean())


def score_model(model, source_val, source_train_x: torch.Tensor, target_x: torch.Tensor,
                layer: str = "features", max_snd: int = 1000) -> dict:
    """Every label-free score of one trained ``model``.

    Args:
        model: the trained network.
        source_val: ``(x, y)`` held-out labeled source samples (never trained on).
        source_train_x: source training inputs (for the domain classifier; labels not needed).
        target_x: unlabeled target inputs (no labels are taken).
        layer: the feature layer the density ratio is estimated on (default ``"features"``).
        max_snd: SND's similarity matrix uses at most this many target samples (the first ones).

    Returns:
        ``{"iwcv": risk, "dev": risk, "snd": score, "entropy": score}``.
    """
    from kta_plugins.transfer.transferability import extract

    xv, yv = source_val
    f_val, z_val = extract(model, xv, layer)
    f_src, _ = extract(model, source_train_x, layer)
    f_tgt, z_tgt = extract(model, target_x, layer)
    w = importance_weights(f_src, f_tgt, f_val)
    return {"iwcv": iwcv_risk(z_val, torch.as_tensor(yv), w), "dev": dev_risk(z_val, torch.as_tensor(yv), w),
            "snd": snd_score(z_tgt[:max_snd]), "entropy": entropy_score(z_tgt)}


def select(scores: Sequence[dict], criterion: str = "dev") -> int:
    """Index of the best candidate by ``criterion`` (one of :data:`CRITERIA`; ties: the first)."""
    if criterion not in HIGHER_IS_BETTER:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {criterion!r}")
    if not scores:
        raise ValueError("scores must hold at least one candidate")
    vals = [s[criterion] for s in scores]
    sign = -1.0 if HIGHER_IS_BETTER[criterion] else 1.0
    finite = [(sign * v if v == v else float("inf"), i) for i, v in enumerate(vals)]
    return min(finite)[1]


def select_setting(models: dict, source_val, source_train_x: torch.Tensor, target_x: torch.Tensor,
                   criterion: str = "dev", layer: str = "features"):
    """Pick one of several trained ``models`` (``{setting name: model}``) by a label-free ``criterion``.

    Returns ``(name of the selected setting, {name: scores})``. Only labeled source data and unlabeled
    target inputs are read.
    """
    if not models:
        raise ValueError("models must hold at least one trained candidate")
    names = list(models)
    scores = {n: score_model(models[n], source_val, source_train_x, target_x, layer) for n in names}
    return names[select([scores[n] for n in names], criterion)], scores
