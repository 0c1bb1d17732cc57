"""The shared machinery of the feature-alignment plugins (DANN, CORAL, MMD, CDAN).

:class:`AlignmentPlugin` reads the features of a named layer with
:class:`~kta_plugins.nn.FeatureTap`, draws one target minibatch per training
iteration (:class:`~kta_plugins.adapt.target.TargetSampler`), and adds
``weight * alignment_loss(source features, target features)`` to the loss.
Subclasses implement :meth:`AlignmentPlugin.alignment_loss` (and, when they own
trainable modules, :meth:`AlignmentPlugin.setup`).

Two modes:

``stream=False`` (offline source -> target)
    the current experience is the labeled source; the target is ``target=``
    or the benchmark's ``target_unlabeled``. No target data is an error
    raised before the first step.
``stream=True`` (a stream of domains, row A7)
    each experience is a new domain (labels may be absent, ``-1``); it is the
    *target*, aligned with a small buffer of inputs of the domains seen so far
    (``buffer_size`` samples in all, an equal share per domain), which plays the
    source. The first experience has no buffer and trains unchanged.

Everything the plugins check before training (``before_training_exp``): the
layer exists (``layer=`` named in the error), target data exists, and one
source and one target sample give features of the same shape (the error
names both shapes).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..base import KTAPlugin, check_int, check_positive, check_type, experience_steps
from ..compose import add_loss_term, ensure_optimizer, extra_forward
from ..nn.grl import ganin_lambda
from ..nn.tap import FeatureTap, resolve_module
from .target import TargetSampler, as_inputs, find_target

__all__ = ["AlignmentPlugin", "forward_model"]


def forward_model(strategy, x: torch.Tensor) -> torch.Tensor:
    """Run ``strategy.model`` on ``x`` (task label of the current minibatch, for multi-task models)
    as a scoped extra forward (:func:`kta_plugins.compose.extra_forward`): other plugins' feature
    taps keep the current minibatch's features."""
    return extra_forward(strategy, x)[0]



def probe_layer(strategy, layer: str, inputs):
    """``[(features of layer or None, output or the exception raised), ...]`` for each batch in
    ``inputs``: forwards of ``strategy.model`` in eval mode, without gradients, through a scoped tap
    (the model's mode and the other taps are restored). For a plugin's checks before training."""
    model = strategy.model
    was_training = model.training
    tap = FeatureTap(model, [layer], detach=True, scoped=True)
    results = []
    try:
        model.eval()
        with torch.no_grad():
            for x in inputs:
                tap.clear()
                try:
                    out = forward_model(strategy, x.to(strategy.device))
                except Exception as e:  # noqa: BLE001 - the caller reports it with the shapes involved
                    out = e
                results.append((tap.features.get(layer), out))
    finally:
        tap.remove()
        model.train(was_training)
    return results

class AlignmentPlugin(KTAPlugin):
    """Base class: align the features of ``layer`` between source and target minibatches.

    Args:
        target: unlabeled target inputs (tensor, dataset or experience); default:
            the benchmark's ``target_unlabeled``.
        layer: module whose output is aligned (default ``"features"``).
        weight: weight of the alignment loss (default 1.0).
        target_mb_size: target minibatch size (default: the source minibatch's).
        stream: align each new domain with a buffer of the previous ones (default False).
        buffer_size: samples kept of the previous domains in stream mode (default 200).
        replay: in stream mode, also add the cross-entropy of the buffer samples that have labels
            (default True; without it an unlabeled domain gets no supervised signal and alignment
            alone can collapse the features).
        seed: seed of the target minibatches and of the buffer (default 0).
    """

    #: name used in error messages
    technique = "alignment"
    state_attrs = ("rng_state", "step", "buffer_x", "buffer_y", "buffer_d")

    def __init__(self, target=None, layer: str = "features", weight: float = 1.0,
                 target_mb_size: Optional[int] = None, stream: bool = False, buffer_size: int = 200,
                 seed: int = 0, replay: bool = True):
        super().__init__()
        self.replay = check_type("replay", replay, bool)
        self.layer = check_type("layer", layer, str)
        self.weight = check_positive("weight", weight, strict=False)
        self.target_mb_size = None if target_mb_size is None else check_int("target_mb_size", target_mb_size, 2)
        self.stream = check_type("stream", stream, bool)
        self.buffer_size = check_int("buffer_size", buffer_size, 1)
        self.seed = check_int("seed", seed)
        self.target = None if target is None else as_inputs(target, "target")
        self._gen = torch.Generator().manual_seed(self.seed)
        self._sampler: Optional[TargetSampler] = None
        self._tap: Optional[FeatureTap] = None
        self._current = None
        self._active = False
        self._checked = False
        self.step = 0
        self.total_steps = 1
        self.buffer_x: Optional[torch.Tensor] = None
        self.buffer_d: Optional[torch.Tensor] = None
        self.buffer_y: Optional[torch.Tensor] = None
        self.last_alignment = float("nan")

    # ------------------------------------------------------------------ state
    @property
    def rng_state(self) -> torch.Tensor:
        return self._gen.get_state()

    @rng_state.setter
    def rng_state(self, state: torch.Tensor):
        self._gen.set_state(state)

    # ------------------------------------------------------------------ subclass API
    def setup(self, strategy, h_probe: torch.Tensor, out_probe: torch.Tensor) -> None:
        """Create trainable modules from a probe batch of (flattened) features and model outputs."""

    def alignment_loss(self, hs, ht, out_s, out_t) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def trainable_modules(self) -> list:
        """Modules of the plugin's own that must be optimized (added to the strategy's optimizer)."""
        return []

    def optimizer_groups(self, strategy):
        """The plugin's own modules (a domain classifier...), one group at ``head_lr`` when the
        subclass has one (default: the optimizer's rate)."""
        params = [p for m in self.trainable_modules() for p in m.parameters()]
        if not params:
            return []
        return [{"params": params, "lr": getattr(self, "head_lr", None), "name": f"{self.technique.lower()}.head"}]

    # ------------------------------------------------------------------ hooks
    def _init_warmup(self, warmup: bool, gamma: float, schedule_steps: Optional[int]) -> None:
        """Check and keep the warm-up options of the alignment weight (CORAL, MMD): Ganin's ramp
        ``2 / (1 + exp(-gamma p)) - 1`` over ``schedule_steps`` updates (default: the experience's)."""
        self.warmup = check_type("warmup", warmup, bool)
        self.gamma = check_positive("gamma", gamma)
        self.schedule_steps = None if schedule_steps is None else check_int("schedule_steps", schedule_steps, 1)

    def ramp(self) -> float:
        """The warm-up factor on the weight at the current progress (1 without ``warmup``)."""
        return ganin_lambda(self.progress, self.gamma) if self.warmup else 1.0

    def _err(self, msg):
        return ValueError(f"{self.technique}: {msg}")

    def _other_inputs(self, strategy) -> Optional[torch.Tensor]:
        """Inputs of the other domain: the target (offline) or the buffer of past domains (stream)."""
        if self.stream:
            return self.buffer_x
        x = self.target if self.target is not None else find_target(strategy)
        if x is None:
            raise self._err(
                "no target data: pass target= (unlabeled target inputs: a tensor, a dataset or an experience) "
                "or train on a scenario that carries them (scenarios.domains.source_target sets "
                "bm.target_unlabeled); the current experience is not used as target")
        return x

    def before_training_exp(self, strategy, **kwargs):
        try:
            resolve_module(strategy.model, self.layer, argument="layer")
        except ValueError as e:
            raise self._err(str(e)) from None
        other = self._other_inputs(strategy)
        self._active = other is not None
        self._checked = False
        self.step = 0
        if not self._active:
            return
        self._sampler = TargetSampler(other, seed=0)
        self._sampler.generator = self._gen
        first = strategy.adapted_dataset[0][0]
        x_src = torch.as_tensor(first).unsqueeze(0).float()
        hs, out, ht = self._probe(strategy, x_src, other[:1])
        self.setup(strategy, hs, out)
        for m in self.trainable_modules():
            m.to(strategy.device)
        ensure_optimizer(self, strategy)  # a composing strategy assembles after this hook
        self.total_steps = experience_steps(strategy, getattr(self, "schedule_steps", None))
        self._tap = FeatureTap(strategy.model, [self.layer])

    def _probe(self, strategy, x_cur, x_other):
        """Features of one current and one other-domain sample, in eval mode without gradients."""
        names = ("current experience", "buffer of past domains" if self.stream else "target")
        feats, outs = [], []
        for name, x, (feat, out) in zip(names, (x_cur, x_other), probe_layer(strategy, self.layer, (x_cur, x_other))):
            if isinstance(out, Exception):
                if feat is None:
                    raise self._err(f"the model cannot run on the {name} inputs of shape "
                                    f"{tuple(x.shape[1:])}: {type(out).__name__}: {out}") from None
                out = None
            if feat is None:
                raise KeyError(f"no output recorded for {self.layer!r} yet: run a forward pass first")
            feats.append(feat)
            outs.append(out)
        a, b = feats
        if a.shape[1:] != b.shape[1:]:
            src, tgt = (names[1], names[0]) if self.stream else names
            sa, sb = (b, a) if self.stream else (a, b)
            raise self._err(
                f"source and target feature widths differ at layer {self.layer!r}: {src} features "
                f"{tuple(sa.shape[1:])}, {tgt} features {tuple(sb.shape[1:])} (inputs "
                f"{tuple(x_cur.shape[1:])} and {tuple(x_other.shape[1:])})")
        return a.flatten(1), outs[0], b.flatten(1)

    def after_forward(self, strategy, **kwargs):
        if self._active and self._tap is not None:
            self._current = self._tap[self.layer].flatten(1)

    def before_backward(self, strategy, **kwargs):
        if not self._active or self._current is None:
            return
        cur, out_cur = self._current, strategy.mb_output
        n = self.target_mb_size or len(strategy.mb_x)
        idx = self._sampler.draw_indices(n)
        x_other = self._sampler.x[idx].to(strategy.device)
        out_other, feats = extra_forward(strategy, x_other, layers=(self.layer,))
        if self.stream and self.replay and self.buffer_y is not None:
            y = self.buffer_y[idx].to(strategy.device)
            keep = y >= 0
            if bool(keep.any()):
                add_loss_term(strategy, "replay", torch.nn.functional.cross_entropy(out_other[keep], y[keep]),
                              owner=self)
        other = feats[self.layer].flatten(1)
        if self.stream:
            hs, ht, out_s, out_t = other, cur, out_other, out_cur
        else:
            hs, ht, out_s, out_t = cur, other, out_cur, out_other
        if hs.shape[1:] != ht.shape[1:]:
            raise self._err(f"source and target feature widths differ at layer {self.layer!r}: "
                            f"{tuple(hs.shape[1:])} vs {tuple(ht.shape[1:])}")
        loss = self.alignment_loss(hs, ht, out_s, out_t)
        self.last_alignment = float(loss.detach())
        add_loss_term(strategy, self.technique.lower(), loss, weight=self.weight, owner=self)
        self._current = None

    def after_update(self, strategy, **kwargs):
        if self._active:
            self.step += 1

    @property
    def progress(self) -> float:
        """Training progress ``p`` in [0, 1] within the current experience."""
        return min(1.0, self.step / self.total_steps)

    def after_training_exp(self, strategy, **kwargs):
        if self._tap is not None:
            self._tap.remove()
            self._tap = None
        self._current = None
        if self.stream:
            self._add_to_buffer(strategy)

    def _add_to_buffer(self, strategy):
        from scenarios.loaders import tensor_view

        fields = tensor_view(strategy.experience.dataset)
        if fields is not None:
            x, y_all = fields[0], fields[1].long()
        else:
            x = as_inputs(strategy.experience.dataset, "experience")
            y_all = torch.as_tensor([int(strategy.experience.dataset[i][1]) for i in range(len(x))])
        d = 0 if self.buffer_d is None else int(self.buffer_d.max()) + 1
        n_domains = d + 1
        quota = max(1, self.buffer_size // n_domains)
        keep_x, keep_y, keep_d = [], [], []
        if self.buffer_x is not None:
            for k in range(d):
                mask = self.buffer_d == k
                keep_x.append(self.buffer_x[mask][:quota])
                keep_y.append(self.buffer_y[mask][:quota])
                keep_d.append(torch.full((len(keep_x[-1]),), k, dtype=torch.long))
        idx = torch.randperm(len(x), generator=self._gen)[:quota]
        keep_x.append(x[idx].detach().cpu())
        keep_y.append(y_all[idx].detach().cpu())
        keep_d.append(torch.full((len(idx),), d, dtype=torch.long))
        self.buffer_x, self.buffer_y, self.buffer_d = torch.cat(keep_x), torch.cat(keep_y), torch.cat(keep_d)
