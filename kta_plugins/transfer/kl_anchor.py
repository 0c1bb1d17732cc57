"""KL anchoring to the source model's predictions (Phan et al. 2020)."""
from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from avalanche.models.utils import avalanche_forward

from kta_plugins.base import KTAPlugin, check_choice, check_positive, check_range, frozen_copy, register_plugin
from kta_plugins.compose import CRITERION, add_loss_term, scale_loss_term

__all__ = ["KLAnchor", "kl_anchor_loss"]


def kl_anchor_loss(logits: torch.Tensor, source_logits: torch.Tensor, targets: torch.Tensor,
                   a: float, temperature: float = 1.0) -> torch.Tensor:
    """``(1 - a) * CE(logits, y) + a * T^2 * KL(softmax(source/T) || softmax(logits/T))`` (batch mean)."""
    ce = F.cross_entropy(logits, targets)
    return (1 - a) * ce + a * _kl(logits, source_logits, temperature)


def _kl(logits, source_logits, temperature):
    t = temperature
    p_src = F.log_softmax(source_logits / t, dim=1)
    return F.kl_div(F.log_softmax(logits / t, dim=1), p_src, reduction="batchmean", log_target=True) * t * t


@register_plugin("kl-anchor", help="KL anchoring (Phan et al. 2020): (1-a) CE + a KL(source || model)")
class KLAnchor(KTAPlugin):
    """KL-divergence anchoring of the adapted model to the frozen source model.

    Phan et al. 2020, "Personalized automatic sleep staging with single-night
    data: a pilot study with Kullback-Leibler divergence regularization"
    (Physiological Measurement 41(6)). The loss on a target minibatch is

        L = (1 - a) * CE(y, p) + a * T^2 * KL(q || p)

    with ``p = softmax(f(x)/T)`` the adapted model's and ``q = softmax(f_0(x)/T)``
    the frozen source model's output distribution (``T = 1`` in the paper; for
    the CE term the temperature is 1). The plugin replaces the strategy's CE
    term by this mix (through the loss ledger: the criterion's weight is multiplied by ``1 - a`` and the term ``kl-anchor`` is added with weight ``a``, so
    other plugins' terms are untouched); the criterion must be cross-entropy.

    Args:
        a: weight of the KL term in [0, 1] (default 0.5; 0 = plain fine-tuning).
        temperature: softmax temperature of the KL term (default 1.0).
        anchor: ``"pretrained"`` (the model at the start of the first training
            experience) or ``"experience"`` (re-copied at every experience).

    State: ``state_dict()`` holds the source model's weights. ``load_state_dict``
    on a fresh plugin keeps them and, at the next training experience, loads
    them into ``frozen_copy(strategy.model)`` (the source has the model's
    architecture), so a resumed run anchors to the same source.

    Example:
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[KLAnchor(a=0.5)])
        >>> strategy.train(target_experience)
    """

    state_attrs = ("source",)

    def __init__(self, a: float = 0.5, temperature: float = 1.0,
                 anchor: Literal["pretrained", "experience"] = "pretrained"):
        super().__init__()
        self.a = check_range("a", a, 0.0, 1.0)
        self.temperature = check_positive("temperature", temperature)
        self.anchor = check_choice("anchor", anchor, ("pretrained", "experience"))
        self.source: Optional[torch.nn.Module] = None
        self._pending_source: Optional[dict] = None  # loaded source weights awaiting the model

    def state_dict(self) -> dict:
        if self.source is None and self._pending_source is not None:
            # Loaded but not yet rebuilt (no training since the load): save what was loaded.
            return {"source": {"__module_state__": {k: v.clone() for k, v in self._pending_source.items()}}}
        return super().state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the source model. Its architecture is the strategy model's, which a fresh
        plugin does not know yet: when no source exists, the saved weights are kept and loaded
        into ``frozen_copy(strategy.model)`` at the next ``before_training_exp``."""
        if "source" not in state:
            raise KeyError("KLAnchor.load_state_dict: missing state ['source']")
        saved = state["source"]
        self._pending_source = None
        if saved is None:
            self.source = None
        elif self.source is not None:
            self.source.load_state_dict(saved["__module_state__"])
        else:
            self._pending_source = {k: v.clone() for k, v in saved["__module_state__"].items()}

    def before_training_exp(self, strategy, **kwargs):
        if self.source is None and self._pending_source is not None and self.anchor == "pretrained":
            self.source = frozen_copy(strategy.model, device=strategy.device)
            try:
                self.source.load_state_dict(self._pending_source)
            except RuntimeError as e:
                self.source = None
                raise ValueError(f"KLAnchor: the loaded source model does not fit the strategy's model: {e}") from e
            self.source.to(strategy.device)
        elif self.source is None or self.anchor == "experience":
            self.source = frozen_copy(strategy.model, device=strategy.device)
        else:
            self.source.to(strategy.device)
        self._pending_source = None

    def before_backward(self, strategy, **kwargs):
        if self.a == 0:
            return
        logits = strategy.mb_output
        with torch.no_grad():
            src = avalanche_forward(self.source, strategy.mb_x, strategy.mb_task_id)
        if src.shape != logits.shape:
            raise ValueError(f"KLAnchor: the source model outputs {tuple(src.shape)} but the model outputs "
                             f"{tuple(logits.shape)}; the anchor needs the same output layer")
        # (1 - a) * criterion + a * KL through the loss ledger: the criterion term is re-weighted
        # (re-weighting plugins multiply their factors), the KL is the plugin's own term.
        scale_loss_term(strategy, CRITERION, 1.0 - self.a, owner=self)
        add_loss_term(strategy, "kl-anchor", _kl(logits, src, self.temperature), weight=self.a, owner=self)
