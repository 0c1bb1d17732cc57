"""CDAN: conditional domain-adversarial networks (Long et al. 2018)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..base import check_int, check_type, register_plugin
from .dann import DANN, example_target as _check_target

__all__ = ["CDAN", "multilinear_map", "RandomizedMultilinear", "entropy_weights"]


def multilinear_map(h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``T(h, g) = g ⊗ h`` flattened: ``(n, d)`` features and ``(n, C)`` predictions -> ``(n, C * d)``,
    entry ``[i, c * d + j] = g[i, c] * h[i, j]``."""
    if h.shape[0] != g.shape[0]:
        raise ValueError(f"multilinear_map: {h.shape[0]} feature rows but {g.shape[0]} prediction rows")
    return torch.bmm(g.unsqueeze(2), h.unsqueeze(1)).flatten(1)


class RandomizedMultilinear(nn.Module):
    """``T(h, g) = (R_h h) ⊙ (R_g g) / sqrt(out_dim)`` with fixed Gaussian ``R_h``, ``R_g`` (CDAN's
    randomized multilinear map, used when ``C * d`` is too wide). Not trained."""

    def __init__(self, width: int, n_classes: int, out_dim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("r_h", torch.randn(width, out_dim, generator=g))
        self.register_buffer("r_g", torch.randn(n_classes, out_dim, generator=g))
        self.out_dim = out_dim

    def forward(self, h, g):
        return (h @ self.r_h) * (g @ self.r_g) / self.out_dim ** 0.5


def entropy_weights(g: torch.Tensor) -> torch.Tensor:
    """CDAN+E's sample weights ``w = 1 + exp(-H(g))``, ``H`` the entropy of the prediction ``g`` (detached)."""
    g = g.detach()
    ent = -(g * torch.log(g.clamp_min(1e-12))).sum(1)
    return 1.0 + torch.exp(-ent)


@register_plugin("cdan")
class CDAN(DANN):
    """Conditional domain-adversarial network (Long et al. 2018, "Conditional Adversarial Domain
    Adaptation", NeurIPS).

    Like :class:`~kta_plugins.adapt.DANN`, but the domain classifier reads the
    multilinear conditioning ``T(h, g) = g ⊗ h`` (shape ``(n, C * d)``) of the
    features ``h`` of ``layer`` and the softmax predictions ``g`` (detached, as
    in the authors' code), through the gradient reversal layer:

        loss = CE + weight * 1/2 [sum_s w_s BCE(D(R(T_s)), 0) + sum_t w_t BCE(D(R(T_t)), 1)]

    With ``entropy=True`` (CDAN+E) ``w = 1 + exp(-H(g))`` normalised within
    each domain, so confident predictions weigh more; otherwise ``w = 1/n``.
    When ``C * d > max_dim`` the randomized map ``(R_h h) ⊙ (R_g g) / sqrt(max_dim)``
    replaces the outer product. Schedule, head and target data as in DANN.

    Args:
        weight: weight of the domain loss (default 0.1: the best mean rank by the label-free DEV criterion
            over the DA benchmark suite, among 0.1 / 0.3 / 1; docs/domain_adaptation.md).
        entropy: entropy conditioning (CDAN+E, default False).
        max_dim: largest width of the exact multilinear map (default 4096).

    All other arguments, defaults included (head 256-256 with Dropout 0.5, Ganin's ramp on
    ``lambda``, collapse guards), are as in :class:`~kta_plugins.adapt.DANN`.

    Example:
        >>> from kta_plugins.adapt import CDAN
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[CDAN(entropy=True)])
        >>> # command line: kta run --scenario mnist1d-shear --plugin cdan:entropy=true
    """

    technique = "CDAN"
    state_attrs = DANN.state_attrs + ("randomized",)
    check_args = {"target": _check_target()}

    def __init__(self, target=None, layer: str = "features", weight: float = 0.1, lambda_max: float = 1.0,
                 gamma: float = 10.0, schedule_steps: Optional[int] = None, head_hidden: int = 256,
                 head_layers: int = 2, head_dropout: float = 0.5, head_bn: bool = False,
                 head_lr: Optional[float] = None, entropy: bool = False, max_dim: int = 4096,
                 guards: str = "warn", target_mb_size: Optional[int] = None, stream: bool = False,
                 buffer_size: int = 200, seed: int = 0, replay: bool = True):
        super().__init__(target=target, layer=layer, weight=weight, lambda_max=lambda_max, gamma=gamma,
                         schedule_steps=schedule_steps, head_hidden=head_hidden, head_layers=head_layers,
                         head_dropout=head_dropout, head_bn=head_bn, head_lr=head_lr, guards=guards,
                         target_mb_size=target_mb_size, stream=stream, buffer_size=buffer_size, seed=seed,
                         replay=replay)
        self.entropy = check_type("entropy", entropy, bool)
        self.max_dim = check_int("max_dim", max_dim, 1)
        self.randomized: Optional[nn.Module] = None

    def head_width(self, h_probe, out_probe):
        if out_probe is None:
            raise self._err("the model's output is needed for the conditioning, but it failed on the probe")
        d, c = h_probe.shape[1], out_probe.shape[1]
        if c * d > self.max_dim:
            if self.randomized is None:
                self.randomized = RandomizedMultilinear(d, c, self.max_dim, seed=self.seed + 2)
            return self.max_dim
        return c * d

    def setup(self, strategy, h_probe, out_probe):
        super().setup(strategy, h_probe, out_probe)
        if self.randomized is not None:
            self.randomized.to(strategy.device)

    def build_state_module(self, name, state):
        if name == "randomized":
            m = RandomizedMultilinear(state["r_h"].shape[0], state["r_g"].shape[0], state["r_h"].shape[1])
            return m
        return super().build_state_module(name, state)

    def condition(self, h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The domain classifier's input ``T(h, softmax(logits))`` (softmax detached)."""
        g = F.softmax(logits, dim=1).detach()
        if self.randomized is not None:
            return self.randomized(h, g)
        return multilinear_map(h, g)

    def alignment_loss(self, hs, ht, out_s, out_t):
        self._guard_target_logits = None if out_t is None else out_t.detach()
        ts, tt = self.condition(hs, out_s), self.condition(ht, out_t)
        if self.entropy:
            ws = entropy_weights(F.softmax(out_s, 1))
            wt = entropy_weights(F.softmax(out_t, 1))
            return self.adversarial_loss(ts, tt, ws, wt, features=hs)
        return self.adversarial_loss(ts, tt, features=hs)
