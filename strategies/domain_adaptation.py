"""``DomainAdaptation``: KTA's Naive strategy with one alignment plugin and a label-masking loss.

Example:
    >>> from scenarios.domains import source_target, mnist1d_domain
    >>> from strategies.domain_adaptation import DomainAdaptation
    >>> bm = source_target("mnist1d", mnist1d_domain(shear_scale=2.0, seed=43))
    >>> s = DomainAdaptation(model=model, optimizer=opt, method="dann", lambda_max=0.3, train_epochs=30)
    >>> s.train(bm.train_stream[0]); s.eval(bm.test_stream)   # target from bm.target_unlabeled
    >>> # command line: kta run --scenario mnist1d-shear --strategy domain-adaptation:method=coral,weight=100
"""
from __future__ import annotations

from typing import Optional, Sequence

from kta_plugins.adapt import CDAN, CORAL, DANN, MMD, MaskedCrossEntropy
from kta_plugins.base import check_choice, check_int, check_positive, check_type

from .base import Naive
from .registry import register_strategy

__all__ = ["DomainAdaptation", "METHODS"]

METHODS = {"dann": DANN, "coral": CORAL, "mmd": MMD, "cdan": CDAN}


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
        weight: weight of the alignment loss (default 1.0).
        lambda_max: DANN / CDAN final reversal coefficient (default 1.0).
        head_lr: DANN / CDAN domain-classifier learning rate (default: the optimizer's).
        entropy: CDAN+E entropy conditioning (default False).
        stream: align each new domain with a buffer of the previous ones (default False).
        buffer_size: that buffer's size (default 200).
        replay: stream mode: also replay the labeled buffer samples' cross-entropy (default True).
        **kwargs: KTA strategy arguments (``model=``, ``optimizer=``, ``train_epochs=``, ``plugins=`` ...).
    """

    def __init__(self, *, method: str = "dann", target=None, layer: str = "features", weight: float = 1.0,
                 lambda_max: float = 1.0, head_lr: Optional[float] = None, entropy: bool = False,
                 stream: bool = False, buffer_size: int = 200, replay: bool = True, seed: int = 0,
                 plugins: Optional[Sequence] = None, criterion=None, **kwargs):
        check_choice("method", method, [*METHODS, "none"])
        check_positive("weight", weight, strict=False)
        check_positive("lambda_max", lambda_max, strict=False)
        check_type("entropy", entropy, bool)
        check_int("buffer_size", buffer_size, 1)
        common = dict(target=target, layer=layer, weight=weight, stream=stream, buffer_size=buffer_size, seed=seed,
                      replay=replay)
        own = []
        if method in ("dann", "cdan"):
            extra = {"entropy": entropy} if method == "cdan" else {}
            own.append(METHODS[method](lambda_max=lambda_max, head_lr=head_lr, **common, **extra))
        elif method != "none":
            own.append(METHODS[method](**common))
        self.adaptation = own[0] if own else None
        super().__init__(plugins=[*own, *(plugins or [])], criterion=criterion or MaskedCrossEntropy(),
                         seed=seed, **kwargs)
