"""FISH mask: update only the parameters with the largest Fisher information (Sung et al. 2021)."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from kta_plugins.base import KTAPlugin, check_fraction, check_int, register_plugin

__all__ = ["FishMask", "fisher_diagonal", "fish_mask"]


def fisher_diagonal(model, x: torch.Tensor, y: torch.Tensor, task_labels=None) -> Dict[str, torch.Tensor]:
    """Empirical diagonal Fisher ``F_i = 1/n sum_j (d log p(y_j | x_j) / d theta_i)^2`` of the
    trainable parameters, one example at a time."""
    from avalanche.models.utils import avalanche_forward

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    try:
        for j in range(len(x)):
            t = None if task_labels is None else task_labels[j:j + 1]
            out = model(x[j:j + 1]) if t is None else avalanche_forward(model, x[j:j + 1], t)
            logp = F.log_softmax(out, dim=1)[0, y[j]]
            grads = torch.autograd.grad(logp, list(params.values()), allow_unused=True)
            for (n, _), g in zip(params.items(), grads):
                if g is not None:
                    fisher[n] += g.detach() ** 2
    finally:
        model.train(was_training)
    return {n: f / max(len(x), 1) for n, f in fisher.items()}


def fish_mask(fisher: Dict[str, torch.Tensor], keep_ratio: float) -> Dict[str, torch.Tensor]:
    """Boolean masks keeping the top ``keep_ratio`` fraction of all entries by Fisher value
    (one global threshold; ties broken by ``topk``)."""
    flat = torch.cat([f.flatten() for f in fisher.values()])
    k = max(1, int(round(keep_ratio * flat.numel())))
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, k).indices] = True
    out, i = {}, 0
    for n, f in fisher.items():
        out[n] = keep[i:i + f.numel()].view_as(f)
        i += f.numel()
    return out


@register_plugin("fish", help="FISH mask (Sung et al. 2021): update only the top-k Fisher entries")
class FishMask(KTAPlugin):
    """FISH mask (Sung, Nair & Raffel, NeurIPS 2021, "Training Neural Networks with Fixed
    Sparse Masks").

    At the start of every experience the diagonal Fisher information of every
    trainable parameter is estimated on ``n_samples`` of the experience's
    examples,

        F_i = 1/n sum_j (d log p(y_j | x_j) / d theta_i)^2,

    and only the top ``keep_ratio`` fraction of all entries (one global
    threshold) is updated: gradients outside the mask are zeroed before each
    step and, so that momentum or weight decay cannot move them either, the
    masked-out entries are restored after the step. Entries outside the mask
    stay bit-for-bit unchanged.

    Args:
        keep_ratio: fraction of entries updated, in (0, 1] (default 0.05; the
            paper uses 0.005 on large models).
        n_samples: examples used for the Fisher estimate (default 256).

    Example:
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[FishMask(keep_ratio=0.05)])
    """

    state_attrs = ("masks",)

    def __init__(self, keep_ratio: float = 0.05, n_samples: int = 256):
        super().__init__()
        self.keep_ratio = check_fraction("keep_ratio", keep_ratio)
        self.n_samples = check_int("n_samples", n_samples, minimum=1)
        self.masks: Dict[str, torch.Tensor] = {}
        self._before: Dict[str, torch.Tensor] = {}

    def before_training_exp(self, strategy, **kwargs):
        from scenarios.loaders import tensor_view

        ds = strategy.adapted_dataset
        fields = tensor_view(ds)
        if fields is None:
            loader = torch.utils.data.DataLoader(ds, batch_size=self.n_samples, shuffle=False)
            fields = list(next(iter(loader)))
        gen = torch.Generator().manual_seed(int(getattr(strategy, "seed", 0)))
        idx = torch.randperm(len(fields[0]), generator=gen)[:self.n_samples]
        x, y = fields[0][idx].to(strategy.device), fields[1][idx].to(strategy.device)
        t = fields[-1][idx].to(strategy.device) if len(fields) > 2 else None
        fisher = fisher_diagonal(strategy.model, x, y, t)
        self.masks = fish_mask(fisher, self.keep_ratio)

    def before_update(self, strategy, **kwargs):
        params = dict(strategy.model.named_parameters())
        self._before = {}
        for n, m in self.masks.items():
            p = params[n]
            if p.grad is not None:
                p.grad.mul_(m)
            self._before[n] = p.detach().clone()

    @torch.no_grad()
    def after_update(self, strategy, **kwargs):
        params = dict(strategy.model.named_parameters())
        for n, old in self._before.items():
            p = params[n]
            p.copy_(torch.where(self.masks[n], p, old))
        self._before = {}
