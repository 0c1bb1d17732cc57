"""Self-training on unlabeled experiences: gradual self-training across a domain bridge.

Kumar, Ma & Liang 2020, "Understanding Self-Training for Gradual Domain Adaptation"
(ICML). Labels exist only on the source; each later domain ``D_k`` is unlabeled. The
model trained so far, ``f_{k-1}``, labels ``D_k`` and is trained further on its own
confident pseudo-labels:

    y_hat(x) = argmax_c f_{k-1}(x)_c,      conf(x) = max_c softmax(f_{k-1}(x))_c
    f_k = argmin_f  sum_{x in D_k, kept}  loss(f(x), y_hat(x))      (starting from f_{k-1})

where a sample is kept when ``conf(x) >= threshold`` and it is among the ``fraction``
most confident unlabeled samples of ``D_k`` (Kumar et al. drop the 10% least
confident: ``fraction=0.9``). The pseudo-labels are computed once, at the start of the
experience, with the model as it is then (a fixed teacher, as in the paper), and stay
fixed during the experience. Over a bridge of small steps (:mod:`scenarios.bridges`)
the pseudo-labels stay mostly right; jumping straight to a far target they do not.

Samples that already have a label (``>= 0``) are kept unchanged; unlabeled samples
(``-1``, :data:`~kta_plugins.adapt.target.UNLABELED`) that are not kept are dropped from
the experience, so any criterion works (no masking needed). An experience without
unlabeled samples is left as it is; one where no sample is kept at all stays unlabeled,
with a warning (train with a masking criterion, e.g. ``MaskedCrossEntropy``, so that it
adds no loss: Avalanche cannot train on an empty experience). ``history`` (in the ``state_dict``) records, per
experience, how many unlabeled samples there were and how many were kept.

Args:
    threshold: minimum softmax confidence of a kept pseudo-label, in ``[0, 1)`` (default 0.0).
    fraction: share of the unlabeled samples kept, the most confident first, in ``(0, 1]``
        (default 1.0).

Example:
    >>> from scenarios.bridges import bridge
    >>> bm = bridge("digits", "rotation", n_experiences=5, labels="source", seed=0)
    >>> s = Naive(model=model, optimizer=opt, plugins=[SelfTraining(threshold=0.5, fraction=0.9)])
    >>> for exp in bm.train_stream:
    ...     s.train(exp)
    >>> # command line: kta run --scenario bridge-digits:labels=source --plugin self-training:fraction=0.9
"""
from __future__ import annotations

import math
import warnings

import torch

from ..base import KTAPlugin, check_fraction, check_range, register_plugin
from .target import UNLABELED

__all__ = ["SelfTraining", "pseudo_label"]


@torch.no_grad()
def pseudo_label(model, x: torch.Tensor, task_labels: torch.Tensor, threshold: float = 0.0,
                 fraction: float = 1.0, batch_size: int = 1024):
    """``(labels, keep)``: arg-max labels of ``model`` on ``x`` and the mask of kept samples.

    A sample is kept when its softmax confidence is ``>= threshold`` and it is among the
    ``ceil(fraction * len(x))`` most confident (ties: the earlier sample first).
    """
    from ..transfer.transferability import extract

    probs = torch.softmax(extract(model, x, None, batch_size, task_labels)[1], 1)
    conf, labels = probs.max(1)
    keep = conf >= threshold
    n_top = math.ceil(fraction * len(x))
    if n_top < len(x):
        order = torch.sort(-conf, stable=True).indices
        top = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        top[order[:n_top]] = True
        keep &= top
    return labels, keep


@register_plugin("self-training")
class SelfTraining(KTAPlugin):
    """Gradual self-training (Kumar et al. 2020): pseudo-label each unlabeled experience with the model
    trained so far, keep the confident labels, train on them (see the module docstring for the formula).

    Args:
        threshold: minimum softmax confidence of a kept pseudo-label, in ``[0, 1)`` (default 0.0).
        fraction: share of the unlabeled samples kept, the most confident first, in ``(0, 1]`` (default 1.0).
    """

    state_attrs = ("history",)

    def __init__(self, threshold: float = 0.0, fraction: float = 1.0):
        super().__init__()
        self.threshold = float(check_range("threshold", threshold, 0, 1, high_inclusive=False))
        self.fraction = float(check_fraction("fraction", fraction))
        self.history: list = []

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        from scenarios.datasets import TensorClassificationDataset
        from scenarios.loaders import dataset_fields
        from scenarios.streams import avalanche_dataset as _av

        ds = strategy.adapted_dataset
        if len(ds) == 0:
            return
        fields = dataset_fields(ds)  # not tensor-backed (transforms): materialised once, as Avalanche collates it
        x, y, t = fields[0], fields[1].long(), fields[-1].long()
        unlabeled = y == UNLABELED
        n_unlabeled = int(unlabeled.sum())
        if n_unlabeled == 0:
            self.history.append({"unlabeled": 0, "kept": 0})
            return
        idx = torch.nonzero(unlabeled).flatten()
        labels, keep = pseudo_label(strategy.model, x[idx].to(strategy.device), t[idx].to(strategy.device),
                                    self.threshold, self.fraction)
        self.history.append({"unlabeled": n_unlabeled, "kept": int(keep.sum())})
        if not keep.any() and bool(unlabeled.all()):
            # Nothing left to train on, and Avalanche cannot train on an empty experience: keep it
            # unlabeled (a masking criterion such as MaskedCrossEntropy then gives it no loss).
            warnings.warn(f"self-training: no unlabeled sample of experience "
                          f"{getattr(strategy.experience, 'current_experience', '?')} is kept "
                          f"(threshold={self.threshold}, fraction={self.fraction}); it stays unlabeled (-1)")
            return
        y = y.clone()
        y[idx] = labels.cpu()
        kept = ~unlabeled
        kept[idx[keep.cpu()]] = True
        # A new tensor-backed dataset (Avalanche's ``targets`` attribute does not change what
        # ``__getitem__`` returns, so relabelling in place is not possible).
        strategy.adapted_dataset = _av(TensorClassificationDataset(x[kept], y[kept]), t[kept].tolist())
