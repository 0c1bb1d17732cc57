"""Paired feature matching between two domains (de Vos et al.)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..base import KTAPlugin, check_choice, check_int, check_positive, check_type, frozen_copy, register_plugin
from ..nn.tap import FeatureTap, resolve_module
from ..compose import add_loss_term, extra_forward
from .target import as_inputs

__all__ = ["FeatureMatching"]


def _check_pairs():
    g = torch.Generator().manual_seed(321)
    xs = torch.rand(48, 1, 8, 8, generator=g)
    return xs, (xs + 0.2 * torch.randn(xs.shape, generator=g)).clamp(0, 1)


@register_plugin("feature-matching")
class FeatureMatching(KTAPlugin):
    """Paired feature matching (de Vos et al., matching the features of one pipeline/domain to another's on
    data seen in both domains).

    Given paired inputs ``(x_s^i, x_t^i)`` (the same sample seen in the source
    and the target domain, e.g. one object under two scanners), each training
    iteration draws a paired minibatch and adds

        weight * mean_i ||f(x_t^i) - f_ref(x_s^i)||^2 / d

    to the loss, ``f`` the output of ``layer`` (width ``d``, read with
    :class:`~kta_plugins.nn.FeatureTap`). With ``anchor="frozen"`` (default),
    ``f_ref`` is a frozen copy of the model taken when adaptation starts (the
    source pipeline: target features are pulled onto the source features,
    which stay fixed); with ``anchor="shared"``, ``f_ref = f`` (both sides move).
    Missing pairs, pairs of unequal length, a missing layer or feature widths
    that differ between the two sides raise a ``ValueError`` before the first step.

    Args:
        pairs: ``(source inputs, target inputs)`` of equal length (tensors or datasets).
        layer: the matched layer (default ``"features"``).
        weight: weight of the matching loss (default 1.0).
        anchor: ``"frozen"`` or ``"shared"`` (default ``"frozen"``).
        pairs_mb_size: paired minibatch size (default: the source minibatch's).
        seed: seed of the paired minibatches (default 0).

    Example:
        >>> from kta_plugins.adapt import FeatureMatching
        >>> fm = FeatureMatching(pairs=(x_scanner_a, x_scanner_b), layer="features", weight=1.0)
        >>> Naive(model=model, optimizer=opt, plugins=[fm]).train(exp)
    """

    state_attrs = ("rng_state", "anchor_state")
    check_args = {"pairs": _check_pairs()}

    def __init__(self, pairs=None, layer: str = "features", weight: float = 1.0, anchor: str = "frozen",
                 pairs_mb_size: Optional[int] = None, seed: int = 0):
        super().__init__()
        self.layer = check_type("layer", layer, str)
        self.weight = check_positive("weight", weight, strict=False)
        self.anchor_mode = check_choice("anchor", anchor, ["frozen", "shared"])
        self.pairs_mb_size = None if pairs_mb_size is None else check_int("pairs_mb_size", pairs_mb_size, 1)
        self.seed = check_int("seed", seed)
        if pairs is not None:
            if not (isinstance(pairs, (tuple, list)) and len(pairs) == 2):
                raise TypeError(f"pairs must be a (source inputs, target inputs) pair, got {type(pairs).__name__}")
            xs, xt = as_inputs(pairs[0], "pairs[0]"), as_inputs(pairs[1], "pairs[1]")
            if len(xs) != len(xt):
                raise ValueError(f"pairs must hold as many source as target inputs, got {len(xs)} and {len(xt)}")
            pairs = (xs, xt)
        self.pairs = pairs
        self._gen = torch.Generator().manual_seed(self.seed)
        self.anchor = None
        self._pending_anchor = None
        self._tap = self._anchor_tap = None
        self.last_matching = float("nan")

    @property
    def rng_state(self):
        return self._gen.get_state()

    @rng_state.setter
    def rng_state(self, s):
        self._gen.set_state(s)

    @property
    def anchor_state(self):
        if self.anchor is None:
            return self._pending_anchor
        return {k: v.detach().cpu().clone() for k, v in self.anchor.state_dict().items()}

    @anchor_state.setter
    def anchor_state(self, s):
        self._pending_anchor = s
        self.anchor = None

    def before_training_exp(self, strategy, **kwargs):
        if self.pairs is None:
            raise ValueError("FeatureMatching: no paired data: pass pairs=(source inputs, target inputs)")
        try:
            resolve_module(strategy.model, self.layer, argument="layer")
        except ValueError as e:
            raise ValueError(f"FeatureMatching: {e}") from None
        if self.anchor_mode == "frozen" and self.anchor is None:
            self.anchor = frozen_copy(strategy.model, strategy.device)
            if self._pending_anchor is not None:
                self.anchor.load_state_dict(self._pending_anchor)
                self._pending_anchor = None
        ref = self.anchor if self.anchor is not None else strategy.model
        self._anchor_tap = FeatureTap(self.anchor, [self.layer], detach=True) if self.anchor is not None else None
        # Probe: one pair, in eval mode without gradients.
        was = strategy.model.training
        strategy.model.eval()
        try:
            with torch.no_grad():
                hs = self._features(strategy, ref, self._anchor_tap, self.pairs[0][:1])
                ht = self._features(strategy, strategy.model, None, self.pairs[1][:1])
        finally:
            strategy.model.train(was)
        if hs.shape[1:] != ht.shape[1:]:
            raise ValueError(f"FeatureMatching: source and target feature widths differ at layer {self.layer!r}: "
                             f"{tuple(hs.shape[1:])} vs {tuple(ht.shape[1:])}")

    def _features(self, strategy, model, tap, x):
        x = x.to(strategy.device)
        if model is strategy.model:  # the paired inputs are extra forwards: other plugins' taps keep the minibatch's
            return extra_forward(strategy, x, layers=(self.layer,))[1][self.layer].flatten(1)
        model(x)
        return tap[self.layer].flatten(1)

    def before_backward(self, strategy, **kwargs):
        n = min(self.pairs_mb_size or len(strategy.mb_x), len(self.pairs[0]))
        idx = torch.randperm(len(self.pairs[0]), generator=self._gen)[:n]
        if self.anchor is not None:
            with torch.no_grad():
                hs = self._features(strategy, self.anchor, self._anchor_tap, self.pairs[0][idx])
        else:
            hs = self._features(strategy, strategy.model, None, self.pairs[0][idx])
        ht = self._features(strategy, strategy.model, None, self.pairs[1][idx])
        loss = F.mse_loss(ht, hs)
        self.last_matching = float(loss.detach())
        add_loss_term(strategy, "feature-matching", loss, weight=self.weight, owner=self)

    def after_training_exp(self, strategy, **kwargs):
        for t in (self._tap, self._anchor_tap):
            if t is not None:
                t.remove()
        self._tap = self._anchor_tap = None
