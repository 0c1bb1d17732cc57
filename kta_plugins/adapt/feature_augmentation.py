"""Frustratingly easy domain adaptation (Daumé III 2007) as a model wrapper."""
from __future__ import annotations

from typing import Union

import torch
from avalanche.models import MultiTaskModule
from torch import nn

from ..base import check_int, check_type

__all__ = ["augment", "FeatureAugmentation"]


def augment(x: torch.Tensor, domain: Union[int, torch.Tensor], n_domains: int = 2) -> torch.Tensor:
    """Daumé's augmented input ``(x, [d = 0] x, ..., [d = K-1] x)`` stacked along dimension 1.

    With two domains: source ``x -> (x, x, 0)``, target ``x -> (x, 0, x)``.
    ``domain`` is one domain index or one per sample. Output: ``(n, (K + 1) * C, ...)``.
    """
    n = x.shape[0]
    d = torch.as_tensor(domain, device=x.device).long()
    if d.ndim == 0:
        d = d.expand(n)
    if d.shape != (n,):
        raise ValueError(f"domain must be an int or hold one index per sample ({n}), got shape {tuple(d.shape)}")
    if bool(((d < 0) | (d >= n_domains)).any()):
        raise ValueError(f"domain indices must be in [0, {n_domains - 1}], got {sorted(set(d.tolist()))}")
    shape = (n,) + (1,) * (x.ndim - 1)
    blocks = [x] + [x * (d == k).to(x.dtype).view(shape) for k in range(n_domains)]
    return torch.cat(blocks, dim=1)


class FeatureAugmentation(MultiTaskModule):
    """Feature augmentation (Daumé III 2007, "Frustratingly Easy Domain Adaptation", ACL).

    Each input is mapped to ``(x, x, 0)`` in the source domain and ``(x, 0, x)``
    in the target domain (in general ``(x, [d=0] x, ..., [d=K-1] x)``, stacked
    along the channel dimension, :func:`augment`) before the wrapped model: the
    model learns shared weights on the first block and domain-specific ones on
    the others. Meant for supervised adaptation (labels in both domains, few in
    the target). The domain index is the sample's task label (an Avalanche
    ``MultiTaskModule``: strategies pass ``mb_task_id``), or ``domain=`` when
    called directly.

    Args:
        model: the wrapped network, built for ``(n_domains + 1) * C`` input channels.
        n_domains: number of domains ``K`` (default 2).

    Example:
        >>> from kta_plugins.adapt import FeatureAugmentation
        >>> net = FeatureAugmentation(MLP((3, 8, 8), 10), n_domains=2)   # inputs (1, 8, 8)
        >>> logits = net(x, 1)                                          # target-domain samples
        >>> Naive(model=net, optimizer=SGD(net.parameters(), lr=0.05)).train(exp)  # task label = domain
    """

    def __init__(self, model: nn.Module, n_domains: int = 2):
        super().__init__()
        self.model = check_type("model", model, nn.Module)
        self.n_domains = check_int("n_domains", n_domains, 2)

    def forward(self, x: torch.Tensor, task_labels: Union[int, torch.Tensor, None] = 0) -> torch.Tensor:
        return self.model(augment(x, 0 if task_labels is None else task_labels, self.n_domains))

    def forward_single_task(self, x, task_label):
        return self.model(augment(x, task_label, self.n_domains))
