"""``DomainAdaptation``: KTA's Naive strategy with one alignment plugin and a label-masking loss.

Example:
    >>> from scenarios.domains import source_target, mnist1d_domain
    >>> from strategies.domain_adaptation import DomainAdaptation
    >>> bm = source_target("mnist1d", mnist1d_domain(shear_scale=2.0, seed=43))
    >>> s = DomainAdaptation(model=model, optimizer=opt, method="dann", train_epochs=30)   # the plugin's defaults
    >>> s.train(bm.train_stream[0]); s.eval(bm.test_stream)   # target from bm.target_unlabeled
    >>> # command line: kta run --scenario mnist1d-shear --strategy domain-adaptation:method=coral,weight=100
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

import torch
from avalanche.core import SupervisedPlugin

from kta_plugins.adapt import CDAN, CORAL, DANN, MMD, MaskedCrossEntropy
from kta_plugins.base import check_choice, check_int, check_positive, check_type

from .base import Naive
from .registry import register_strategy

__all__ = ["DomainAdaptation", "METHODS", "ImportanceCheck"]

METHODS = {"dann": DANN, "coral": CORAL, "mmd": MMD, "cdan": CDAN}


class ImportanceCheck(SupervisedPlugin):
    """Warns when an importance-based regularizer learned nothing from an experience.

    On a stream of domains the later domains are unlabeled (``-1``): the masked criterion has no
    gradient there, so Avalanche's EWC (and MAS / SI, whose importances come from the same loss)
    store importances that are all zero for those experiences, and protect nothing they learned.
    """

    def after_training_exp(self, strategy, **kwargs):
        from avalanche.training.plugins import EWCPlugin

        exp = strategy.experience.current_experience
        for p in strategy.plugins:
            if isinstance(p, EWCPlugin):
                imp = p.importances.get(exp) if hasattr(p.importances, "get") else None
                if imp is None:
                    continue
                values = [v.data if hasattr(v, "data") else v for v in (imp.values() if isinstance(imp, dict) else imp)]
                if values and all(not bool(torch.as_tensor(v).abs().sum() > 0) for v in values):
                    warnings.warn(
                        f"EWCPlugin: the importances of experience {exp} are all zero: its samples are unlabeled "
                        "(-1), so the masked loss has no gradient and EWC protects nothing learned on it; "
                        "regularize with a label-free method or give the domain labels", stacklevel=2)


@register_strategy("domain-adaptation")
class DomainAdaptation(Naive):
    """Unsupervised domain adaptation: the supervised loss on labeled samples plus one alignment plugin.

    The criterion is :class:`~kta_plugins.adapt.MaskedCrossEntropy` (samples
    labeled ``-1``, the unlabeled domains of :func:`scenarios.domains.domain_stream`,
    add no classification loss). ``method="none"`` trains on the labeled data
    only (the source-only baseline).

    Args:
        method: ``"dann"``, ``"coral"``, ``"mmd"``, ``"cdan"`` or ``"none"`` (default ``"dann"``).
        target: unlabeled target inputs (default: the benchmark's ``target_unlabeled``).
        layer: the aligned layer (default ``"features"``).
        weight: weight of the alignment loss (default: the plugin's own default).
        method_args: the method plugin's other arguments, as in :class:`strategies.Distill`, e.g.
            ``{"lambda_max": 0.5, "head_lr": 0.01}`` for DANN, ``{"entropy": True}`` for CDAN,
            ``{"kernel_num": 3}`` for MMD (see each plugin's docstring).
        guards: what the plugin's collapse guards do: ``"warn"`` (default), ``"error"`` or ``"off"``
            (:mod:`kta_plugins.adapt.guards`).
        stream: align each new domain with a buffer of the previous ones (default False).
        buffer_size: that buffer's size (default 200).
        replay: stream mode: also replay the labeled buffer samples' cross-entropy (default True).
        **kwargs: KTA strategy arguments (``model=``, ``optimizer=``, ``train_epochs=``, ``plugins=`` ...).

    An argument the chosen method does not take (``head_lr`` with ``"coral"``, ``entropy`` with
    ``"dann"``) is a ``ValueError`` naming it, not silently ignored. ``lambda_max=``, ``head_lr=``
    and ``entropy=`` given directly are deprecated aliases of ``method_args`` (one release).
    """

    def __init__(self, *, method: str = "dann", target=None, layer: str = "features", weight: Optional[float] = None,
                 method_args: Optional[dict] = None, guards: str = "warn",
                 stream: bool = False, buffer_size: int = 200, replay: bool = True, seed: int = 0,
                 plugins: Optional[Sequence] = None, criterion=None,
                 lambda_max: Optional[float] = None, head_lr: Optional[float] = None, entropy: Optional[bool] = None,
                 **kwargs):
        check_choice("method", method, [*METHODS, "none"])
        if weight is not None:
            check_positive("weight", weight, strict=False)
        check_choice("guards", guards, ["warn", "error", "off"])
        check_int("buffer_size", buffer_size, 1)
        if method_args is not None and not isinstance(method_args, dict):
            raise TypeError(f"method_args must be a dict of the plugin's arguments, got {type(method_args).__name__}")
        method_args = dict(method_args or {})
        # deprecated aliases (one release): the method's own arguments go in method_args, as in Distill
        for name, value in (("lambda_max", lambda_max), ("head_lr", head_lr), ("entropy", entropy)):
            if value is not None:
                warnings.warn(f"DomainAdaptation({name}=...) is deprecated: pass method_args={{'{name}': ...}}",
                              DeprecationWarning, stacklevel=2)
                method_args.setdefault(name, value)
        common = dict(target=target, layer=layer, stream=stream, buffer_size=buffer_size, seed=seed,
                      replay=replay, guards=guards)
        if weight is not None:
            common["weight"] = weight
        if method == "none" and method_args:
            raise ValueError(f"method_args: method 'none' takes no arguments, got {sorted(method_args)}")
        own = []
        if method != "none":
            clash = sorted(set(method_args) & set(common))
            if clash:
                raise ValueError(f"method_args: {clash} are DomainAdaptation's own arguments; pass them directly")
            try:  # an argument the method does not take is an error naming it, never ignored
                own.append(METHODS[method](**common, **method_args))
            except TypeError as e:
                raise ValueError(f"method_args: method {method!r}: {e}") from None
        self.adaptation = own[0] if own else None
        tail = [ImportanceCheck()] if stream else []  # last: runs after the regularizers computed importances
        super().__init__(plugins=[*own, *(plugins or []), *tail], criterion=criterion or MaskedCrossEntropy(),
                         seed=seed, **kwargs)
