"""L2-SP: weight decay towards the starting point (Li, Grandvalet & Davoine 2018)."""
from __future__ import annotations

from typing import Literal, Sequence

import torch

from kta_plugins.base import KTAPlugin, check_choice, check_positive, match_parameters, register_plugin
from kta_plugins.compose import add_loss_term
from kta_plugins.transfer.freeze import name_patterns as _patterns

__all__ = ["L2SP", "l2sp_penalty"]


def l2sp_penalty(model, anchor: dict, alpha: float, beta: float, head_names=()) -> torch.Tensor:
    """``alpha/2 * sum_{w in anchor} ||w - w0||^2 + beta/2 * sum_{w in head} ||w||^2``."""
    params = dict(model.named_parameters())
    sp = None
    for n, w0 in anchor.items():
        term = (params[n] - w0).pow(2).sum()
        sp = term if sp is None else sp + term
    head = None
    for n in head_names:
        term = params[n].pow(2).sum()
        head = term if head is None else head + term
    zero = next(iter(params.values())).new_zeros(())
    return 0.5 * alpha * (sp if sp is not None else zero) + 0.5 * beta * (head if head is not None else zero)


@register_plugin("l2sp", help="L2-SP (Li et al. 2018): penalty towards the starting weights")
class L2SP(KTAPlugin):
    """L2-SP regularisation (Li, Grandvalet & Davoine, ICML 2018, "Explicit inductive
    bias for transfer learning with convolutional networks").

    Adds to the loss

        Omega(w) = alpha/2 * ||w_S - w_S^0||^2 + beta/2 * ||w_H||^2

    where ``w_S`` are the shared (backbone) parameters, ``w_S^0`` their values at
    the anchor point and ``w_H`` the head parameters (matched by ``head``, plus
    any parameter that did not exist or changed shape since the anchor was taken,
    e.g. a grown classifier). Only trainable parameters are penalised.

    Args:
        alpha: strength of the pull towards the anchor (default 0.01).
        beta: plain L2 on the head (default 0.01; 0 disables).
        head: names / globs of the head parameters (default ``["classifier"]``;
            ``[]`` for no head).
        anchor: ``"pretrained"`` (weights at the start of the first training
            experience, kept for the whole stream) or ``"experience"``
            (re-taken at the start of every experience). Default ``"pretrained"``.

    Example:
        >>> reg = L2SP(alpha=0.1, beta=0.01, head=["classifier"])
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[reg])
        >>> strategy.train(target_experience)
    """

    state_attrs = ("anchor_weights",)

    def __init__(self, alpha: float = 0.01, beta: float = 0.01, head: Sequence[str] = ("classifier",),
                 anchor: Literal["pretrained", "experience"] = "pretrained"):
        super().__init__()
        self.alpha = check_positive("alpha", alpha, strict=False)
        self.beta = check_positive("beta", beta, strict=False)
        self.head = _patterns("head", head, allow_empty=True)
        self.anchor = check_choice("anchor", anchor, ("pretrained", "experience"))
        self.anchor_weights: dict = {}
        self._head_names: list[str] = []
        self._anchored: list[str] = []

    def before_training_exp(self, strategy, **kwargs):
        model = strategy.model
        head = set(match_parameters(model, self.head, argument="head")) if self.head else set()
        params = dict(model.named_parameters())
        if self.anchor == "experience" or not self.anchor_weights:
            self.anchor_weights = {n: p.detach().clone() for n, p in params.items() if n not in head}
        self._anchored, self._head_names = [], []
        for n, p in params.items():
            w0 = self.anchor_weights.get(n)
            if n in head or w0 is None or w0.shape != p.shape:
                self._head_names.append(n)
            else:
                self.anchor_weights[n] = w0.to(p.device)
                self._anchored.append(n)

    def penalty(self, model) -> torch.Tensor:
        # Only what trains now: whether a parameter is frozen is read here, after every plugin's
        # before_training_exp (a freezing plugin, LoRA...), so the order of the plugins does not matter.
        live = {n for n, p in model.named_parameters() if p.requires_grad}
        anchor = {n: self.anchor_weights[n] for n in self._anchored if n in live}
        return l2sp_penalty(model, anchor, self.alpha, self.beta, [n for n in self._head_names if n in live])

    def before_backward(self, strategy, **kwargs):
        add_loss_term(strategy, "l2sp", self.penalty(strategy.model), owner=self)
