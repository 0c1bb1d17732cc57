"""DANN: domain-adversarial training by gradient reversal (Ganin & Lempitsky 2015)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..base import KTAPlugin, check_int, check_positive, experience_steps, register_plugin
from ..nn.grl import ganin_lambda, ganin_lr_factor, grad_reverse
from .base import AlignmentPlugin

__all__ = ["DANN", "GaninLR", "domain_head", "domain_adversarial_loss"]


def _check_target():
    """A small target set for ``check_plugin`` (inputs like its 8x8 digit streams)."""
    return torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(123))


def domain_head(width: int, hidden: int = 100, n_out: int = 1, seed: Optional[int] = None) -> nn.Module:
    """The domain classifier: ``Linear(width, hidden) -> ReLU -> Linear(hidden, n_out)`` (``hidden=0``: one
    linear layer). With ``seed``, initialised from it (PyTorch's default uniform bounds), independent of the
    global RNG. Also the attribute adversary of :mod:`.fair` (``n_out`` attribute values)."""
    layers = [nn.Linear(width, n_out)] if hidden == 0 else [nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, n_out)]
    head = nn.Sequential(*layers)
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in layers:
                if isinstance(m, nn.Linear):
                    bound = 1.0 / m.in_features ** 0.5
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 2 * bound - bound)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 2 * bound - bound)
    return head


def domain_adversarial_loss(head: nn.Module, hs: torch.Tensor, ht: torch.Tensor, lambda_: float,
                            ws: Optional[torch.Tensor] = None, wt: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``BCE(head(R(hs)), 0) + BCE(head(R(ht)), 1)`` averaged over both domains, ``R`` the reversal layer.

    ``ws`` / ``wt``: optional per-sample weights of each domain (each normalised to sum 1; CDAN's entropy
    conditioning); without them every sample weighs the same within its domain.
    """
    zs = head(grad_reverse(hs, lambda_)).squeeze(1)
    zt = head(grad_reverse(ht, lambda_)).squeeze(1)
    ls = F.binary_cross_entropy_with_logits(zs, torch.zeros_like(zs), reduction="none")
    lt = F.binary_cross_entropy_with_logits(zt, torch.ones_like(zt), reduction="none")
    if ws is None:
        return 0.5 * (ls.mean() + lt.mean())
    return 0.5 * ((ws / ws.sum() * ls).sum() + (wt / wt.sum() * lt).sum())


@register_plugin("dann")
class DANN(AlignmentPlugin):
    """Domain-adversarial neural network (Ganin & Lempitsky 2015, "Unsupervised Domain Adaptation
    by Backpropagation", ICML; Ganin et al. 2016, JMLR).

    A domain classifier ``D`` (:func:`domain_head`) reads the features ``h`` of
    ``layer`` through a gradient reversal layer ``R_lambda``
    (:mod:`kta_plugins.nn.grl`) and learns to tell source (0) from target (1);
    the reversal makes the feature extractor learn to fool it:

        loss = CE(y_s, f(x_s)) + weight * 1/2 [BCE(D(R(h_s)), 0) + BCE(D(R(h_t)), 1)]

    with Ganin's schedule ``lambda_p = lambda_max * (2 / (1 + exp(-gamma p)) - 1)``,
    ``p`` the training progress from 0 to 1 within each experience (or over
    ``schedule_steps`` updates). ``D`` is created at the start of training (its
    width from a probe forward pass), kept on the plugin (never inside
    ``strategy.model``) and added to ``strategy.optimizer`` as its own parameter
    group (learning rate ``head_lr``, default the optimizer's). Target
    minibatches come from ``target=`` or the benchmark's ``target_unlabeled``
    (:mod:`kta_plugins.adapt.target`); without target data training stops with
    a ``ValueError`` before the first step.

    Args:
        target: unlabeled target inputs (tensor / dataset / experience); default
            the benchmark's ``target_unlabeled``.
        layer: the feature layer (default ``"features"``).
        weight: weight of the domain loss (default 1.0).
        lambda_max: final reversal coefficient (default 1.0).
        gamma: steepness of the schedule (default 10.0, Ganin's).
        schedule_steps: updates over which ``p`` goes 0 -> 1 (default: the
            experience's ``train_epochs * len(dataloader)``).
        head_hidden: hidden width of the domain classifier (default 100; 0: linear).
        head_lr: learning rate of the domain classifier (default: the optimizer's).
        target_mb_size: target minibatch size (default: the source minibatch's).
        stream: align each new domain with a buffer of the previous ones (default False).
        buffer_size: buffer size in stream mode (default 200).
        seed: seed of the target minibatches (default 0).
        replay: stream mode: add the cross-entropy of labeled buffer samples (default True).

    Example:
        >>> from kta_plugins.adapt import DANN
        >>> bm = source_target("mnist1d", mnist1d_domain(shear_scale=2.0, seed=43))
        >>> model = CNN1dGAP((1, 40), 10)                # kta_plugins.nn.models: pooled BatchNorm features
        >>> dann = DANN(layer="features", lambda_max=1.0, weight=1.0)
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[dann], train_epochs=20)
        >>> strategy.train(bm.train_stream[0])           # target read from bm.target_unlabeled
        >>> # kta run --scenario mnist1d-shear --model cnn1d-gap --plugin dann --epochs 20 --lr 0.05 --momentum 0.9
    """

    technique = "DANN"
    state_attrs = AlignmentPlugin.state_attrs + ("head",)
    check_args = {"target": _check_target()}

    def __init__(self, target=None, layer: str = "features", weight: float = 1.0, lambda_max: float = 1.0,
                 gamma: float = 10.0, schedule_steps: Optional[int] = None, head_hidden: int = 100,
                 head_lr: Optional[float] = None, target_mb_size: Optional[int] = None, stream: bool = False,
                 buffer_size: int = 200, seed: int = 0,
                 replay: bool = True):
        super().__init__(target=target, layer=layer, weight=weight, target_mb_size=target_mb_size,
                         stream=stream, buffer_size=buffer_size, seed=seed, replay=replay)
        self.lambda_max = check_positive("lambda_max", lambda_max, strict=False)
        self.gamma = check_positive("gamma", gamma)
        self.schedule_steps = None if schedule_steps is None else check_int("schedule_steps", schedule_steps, 1)
        self.head_hidden = check_int("head_hidden", head_hidden, 0)
        self.head_lr = None if head_lr is None else check_positive("head_lr", head_lr)
        self.head: Optional[nn.Module] = None
        self.last_lambda = 0.0

    def head_width(self, h_probe, out_probe) -> int:
        return h_probe.shape[1]

    def setup(self, strategy, h_probe, out_probe):
        width = self.head_width(h_probe, out_probe)
        if self.head is not None and self.head[0].in_features != width:
            raise self._err(f"the domain classifier reads {self.head[0].in_features} features but layer "
                            f"{self.layer!r} now gives {width}")
        if self.head is None:
            self.head = domain_head(width, self.head_hidden, seed=self.seed + 1)
        self.head.to(strategy.device).train()

    def trainable_modules(self):
        return [self.head] if self.head is not None else []

    def build_state_module(self, name, state):
        if name == "head":
            ws = [state[k] for k in sorted(state) if k.endswith("weight")]
            if len(ws) == 1:
                return nn.Sequential(nn.Linear(ws[0].shape[1], 1))
            return domain_head(ws[0].shape[1], ws[0].shape[0])
        return super().build_state_module(name, state)

    def current_lambda(self) -> float:
        """``lambda_max * (2 / (1 + exp(-gamma p)) - 1)`` at the current progress ``p``."""
        return self.lambda_max * ganin_lambda(self.progress, self.gamma)

    def alignment_loss(self, hs, ht, out_s, out_t):
        self.last_lambda = self.current_lambda()
        return domain_adversarial_loss(self.head, hs, ht, self.last_lambda)


@register_plugin("ganin-lr")
class GaninLR(KTAPlugin):
    """The learning-rate annealing of DANN (Ganin & Lempitsky 2015, "Unsupervised Domain Adaptation
    by Backpropagation", ICML, section 5.1):

        mu_p = mu_0 / (1 + alpha * p) ** beta

    with ``p`` the training progress from 0 to 1 within each experience (or over
    ``schedule_steps`` updates) and ``mu_0`` each parameter group's learning rate
    when first seen in the experience. Groups added later (the domain classifier
    a :class:`DANN` plugin adds) are annealed too, from their own ``mu_0``. The
    learning rates are set before every update and restored to ``mu_0`` at the end
    of the experience, so the next experience starts from them again. Use it for
    every run of a comparison (source only, oracle, each method), not only DANN.

    Args:
        alpha: speed of the decay (default 10.0, Ganin's).
        beta: exponent (default 0.75, Ganin's).
        schedule_steps: updates over which ``p`` goes 0 -> 1 (default: the
            experience's ``train_epochs * len(dataloader)``).

    Example:
        >>> from kta_plugins.adapt.dann import DANN, GaninLR
        >>> strategy = Naive(model=model, optimizer=SGD(model.parameters(), lr=0.01, momentum=0.9),
        ...                  plugins=[GaninLR(), DANN(head_hidden=100)], train_epochs=30)
        >>> # command line: kta run --scenario mnist1d-shear --plugin ganin-lr --plugin dann
    """

    state_attrs = ("step", "total_steps", "base_lrs")

    def __init__(self, alpha: float = 10.0, beta: float = 0.75, schedule_steps: Optional[int] = None):
        super().__init__()
        self.alpha = check_positive("alpha", alpha, strict=False)
        self.beta = check_positive("beta", beta, strict=False)
        self.schedule_steps = None if schedule_steps is None else check_int("schedule_steps", schedule_steps, 1)
        self.step = 0
        self.total_steps = 1
        self.base_lrs: list = []

    def factor(self) -> float:
        """``1 / (1 + alpha p) ** beta`` at the current progress ``p``."""
        return ganin_lr_factor(min(1.0, self.step / self.total_steps), self.alpha, self.beta)

    def before_training_exp(self, strategy, **kwargs):
        self.step, self.base_lrs = 0, []
        self.total_steps = experience_steps(strategy, self.schedule_steps)

    def before_training_iteration(self, strategy, **kwargs):
        groups = strategy.optimizer.param_groups
        self.base_lrs += [float(g["lr"]) for g in groups[len(self.base_lrs):]]  # groups added since: mu_0 = now
        f = self.factor()
        for g, lr0 in zip(groups, self.base_lrs):
            g["lr"] = lr0 * f

    def after_update(self, strategy, **kwargs):
        self.step += 1

    def after_training_exp(self, strategy, **kwargs):
        for g, lr0 in zip(strategy.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr0
