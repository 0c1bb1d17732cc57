"""Where plugins meet the strategy: the loss ledger, scoped extra forwards, optimizer assembly.

Plugins never reach into each other. They meet the strategy in three places,
each with one owner, so any two plugins compose in any order:

**Loss terms** (:func:`add_loss_term`, :func:`scale_loss_term`, :func:`loss_ledger`)
    The loss of a training iteration is a ledger of named, weighted terms::

        strategy.loss = sum_k weight_k * value_k  (+ what non-KTA plugins add)

    The strategy owns the ``"criterion"`` term (weight 1). A plugin adds its
    own terms and may re-weight an existing one; several plugins that re-weight
    the same term compose by the **product** of their factors (each factor
    ``>= 0``), so the weight never turns negative: two ``KD`` plugins with
    ``alpha`` 0.9 leave the criterion at ``0.1 * 0.1``, not at ``1 - 0.9 - 0.9``.
    Two plugins adding a term of the same name keep two terms (``kd``, ``kd#2``).
    Plugins that arbitrate between the terms (multi-task weighting, gradient
    surgery) set ``loss_stage`` and implement ``finalize_loss(strategy)``: a
    composing strategy calls them just before backward, after every plugin added
    its terms, whatever the order of the plugins list. Two arbitrating plugins
    cannot share the ledger and are refused before training (:func:`check_roles`).

**Extra forwards** (:func:`extra_forward`)
    A plugin that runs ``strategy.model`` on other inputs (target batches,
    probes, other heads) does so through one scoped call: other plugins'
    :class:`~kta_plugins.nn.FeatureTap` objects keep the current minibatch's
    features, and ``strategy.mb_output`` is not touched.

**The optimizer** (:func:`assemble_optimizer`, :func:`set_lr_factor`)
    A plugin declares the parameter groups it owns (a domain head, a regressor)
    or re-scales (layer-wise rates) in ``optimizer_groups(strategy)``; the
    strategy builds the optimizer from all declarations once per experience
    (again after the plugins' ``before_training_exp``, which may create heads),
    whatever the order of the plugins. Scales of one parameter multiply; a
    parameter owned by two plugins is an error naming both. Optimizer state
    (momentum, Adam moments) of parameters that survive is kept. Plugins that
    change learning rates during training (schedules, LP-FT's phase) set a
    factor with :func:`set_lr_factor`; factors multiply too.

A strategy composes when it mixes in :class:`ComposeMixin` (every KTA
strategy does). On a plain Avalanche template, KTA plugins fall back to acting
at their own hook (list order matters there).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, Iterable, Optional, Sequence

import torch
from torch import nn

__all__ = [
    "CRITERION", "LossTerm", "LossLedger", "loss_ledger", "add_loss_term", "scale_loss_term", "finalize_loss",
    "extra_forward", "assemble_optimizer", "ensure_optimizer", "set_lr_factor", "check_roles", "ComposeMixin",
    "composes", "plugin_name",
]

#: Name of the strategy's own term.
CRITERION = "criterion"

#: Roles of which one plugin at most may be in a strategy, with what they do (for the error message).
ROLES = {
    "loss-arbitration": "re-weight or arbitrate between the loss terms (multi-task weighting / gradient surgery)",
    "layer-surgery": "replace the model's layers with wrapped ones and choose which parameters train "
                     "(LoRA / adapters)",
    # not exclusive (several may combine); other plugins may refuse them (``refuses_roles``)
    "freezes-layers": "freeze part of the model and train the rest",
    "renames-parameters": "change the model's parameter names (wrapped or replaced layers)",
    "replaces-criterion": "replace the strategy's criterion with their own loss",
}


def plugin_name(plugin) -> str:
    """A plugin's class name, for messages."""
    return type(plugin).__name__


def composes(strategy) -> bool:
    """True when ``strategy`` honours the three meeting points (mixes in :class:`ComposeMixin`)."""
    return bool(getattr(strategy, "kta_composes", False))


# ------------------------------------------------------------------------------------------ ledger
class LossTerm:
    """One term of the ledger: ``weight * value``, owned by ``owner`` (a plugin, or the strategy)."""

    __slots__ = ("name", "value", "weight", "owner")

    def __init__(self, name: str, value, weight: float, owner):
        self.name, self.value, self.weight, self.owner = name, value, weight, owner

    @property
    def contribution(self):
        return self.weight * self.value


def _iteration_key(strategy):
    return (strategy.clock.train_iterations, id(strategy.mb_output))


class LossLedger:
    """The loss of one training iteration as named, weighted terms (see the module docstring).

    Every change keeps ``strategy.loss`` equal to the sum of the weighted terms
    plus whatever non-KTA plugins (Avalanche's EWC, LwF...) added directly.
    """

    def __init__(self, strategy, key, criterion_value):
        self.strategy = strategy
        self.key = key
        self.terms: Dict[str, LossTerm] = {CRITERION: LossTerm(CRITERION, criterion_value, 1.0, strategy)}
        self._scalers: Dict[str, list] = {}
        self.finalized = False

    # -- adding and re-weighting -------------------------------------------------------------
    def add(self, name: str, value, weight: float = 1.0, owner=None) -> str:
        """Add ``weight * value`` as term ``name``; returns the name used (``name#2``... when another
        plugin already owns ``name``). A plugin adding to its own term again accumulates."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"loss term name must be a non-empty string, got {name!r}")
        if weight != 1.0:  # (the common case needs no check)
            weight = _check_factor("weight", weight, f"loss term {name!r}")
        key, k = name, 2
        while key in self.terms and self.terms[key].owner is not owner:
            key, k = f"{name}#{k}", k + 1
        term = self.terms.get(key)
        if term is None:
            self.terms[key] = LossTerm(key, value, weight, owner)
        elif term.weight != weight:
            raise ValueError(f"{plugin_name(owner)} added loss term {key!r} twice with different weights "
                             f"({term.weight} and {weight})")
        else:
            term.value = term.value + value
        if weight == 1.0:
            self.strategy.loss = self.strategy.loss + value
        elif weight != 0:
            self.strategy.loss = self.strategy.loss + weight * value
        return key

    def scale(self, name: str, factor: float, owner=None) -> None:
        """Multiply term ``name``'s weight by ``factor >= 0`` (once per iteration and owner)."""
        factor = _check_factor("factor", factor, f"re-weighting loss term {name!r}")
        term = self.terms.get(name)
        if term is None:
            raise ValueError(f"{plugin_name(owner)} re-weights loss term {name!r}, which is not in the ledger; "
                             f"terms: {sorted(self.terms)}")
        scalers = self._scalers.setdefault(name, [])
        if any(o is owner for o, _ in scalers):
            raise ValueError(f"{plugin_name(owner)} re-weighted loss term {name!r} twice in one iteration")
        scalers.append((owner, factor))
        old = term.weight
        term.weight = old * factor
        if term.weight != old:
            self.strategy.loss = self.strategy.loss + (term.weight - old) * term.value

    def weight(self, name: str) -> float:
        return self.terms[name].weight

    # -- reading -------------------------------------------------------------------------------
    def contributions(self) -> Dict[str, torch.Tensor]:
        """``{name: weight * value}`` for every term, plus ``"other"`` for what non-KTA plugins added
        (when non-zero). They sum to ``strategy.loss``."""
        out = {n: t.contribution for n, t in self.terms.items()}
        total = sum(out.values())
        other = self.strategy.loss - total
        if isinstance(other, torch.Tensor):  # beyond the rounding of the incremental sum
            scale = 1.0 + float(self.strategy.loss.detach().abs().sum())
            if float(other.detach().abs().sum()) > 1e-6 * scale:
                out["other"] = other
        return out

    # -- arbitration ---------------------------------------------------------------------------
    def finalize(self) -> None:
        """Run the arbitrating plugins (``loss_stage``: ``"measure"`` before ``"arbitrate"``), once."""
        if self.finalized:
            return
        self.finalized = True
        staged = getattr(self.strategy, "_staged_plugins", None)
        plugins = staged() if staged is not None else [
            p for stage in ("measure", "arbitrate") for p in self.strategy.plugins
            if getattr(p, "loss_stage", None) == stage]
        for p in plugins:
            p.finalize_loss(self.strategy)


def _check_factor(what, value, context):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0 ({context}), got {value!r}")
    return float(value)


def loss_ledger(strategy) -> LossLedger:
    """The ledger of the current training iteration (created on first use)."""
    key = _iteration_key(strategy)
    ledger = strategy.__dict__.get("_kta_ledger")
    if ledger is None or ledger.key != key:
        recorded = strategy.__dict__.get("_kta_criterion")
        if recorded is not None and recorded[0] == key:
            crit = recorded[1]
        else:  # a plain Avalanche template: the criterion is in strategy.loss; recompute its value
            crit = strategy.criterion()
        ledger = LossLedger(strategy, key, crit)
        strategy._kta_ledger = ledger
    return ledger


def add_loss_term(strategy, name: str, value, weight: float = 1.0, owner=None) -> str:
    """Add ``weight * value`` to ``strategy.loss`` as ledger term ``name`` (see :class:`LossLedger`)."""
    return loss_ledger(strategy).add(name, value, weight, owner)


def scale_loss_term(strategy, name: str, factor: float, owner=None) -> None:
    """Multiply the weight of ledger term ``name`` (e.g. :data:`CRITERION`) by ``factor``."""
    loss_ledger(strategy).scale(name, factor, owner)


def finalize_loss(plugin, strategy) -> None:
    """For an arbitrating plugin's ``before_backward``: on a composing strategy nothing (the strategy
    calls ``finalize_loss`` after every plugin added its terms); elsewhere arbitrate now (list order)."""
    if not composes(strategy):
        plugin.finalize_loss(strategy)


def _roles(plugin):
    roles = set(getattr(plugin, "roles", ()))
    if getattr(plugin, "exclusive_role", None) is not None:
        roles.add(plugin.exclusive_role)
    return roles


def check_roles(plugins: Iterable) -> None:
    """Refuse, naming both, two plugins that claim the same exclusive role (``exclusive_role``), or a
    plugin whose ``refuses_roles`` (``{role: why}``) names a role another plugin has (``roles``)."""
    plugins = list(plugins)
    seen = {}
    for p in plugins:
        role = getattr(p, "exclusive_role", None)
        if role is None:
            continue
        if role in seen:
            raise ValueError(f"plugins {plugin_name(seen[role])} and {plugin_name(p)} cannot be combined: "
                             f"both {ROLES.get(role, role)}; keep one of them")
        seen[role] = p
    for p in plugins:
        for role, why in getattr(p, "refuses_roles", {}).items():
            for q in plugins:
                if q is not p and role in _roles(q):
                    raise ValueError(f"plugins {plugin_name(p)} and {plugin_name(q)} cannot be combined: "
                                     f"{plugin_name(q)} plugins {ROLES.get(role, role)}, and {why}; keep one of them")


# ------------------------------------------------------------------------------------------ forwards
def extra_forward(strategy, x: torch.Tensor, task_labels: Optional[torch.Tensor] = None,
                  layers: Sequence[str] = (), model: Optional[nn.Module] = None):
    """Run ``strategy.model`` (or ``model``) on ``x`` without disturbing the current minibatch.

    Other :class:`~kta_plugins.nn.FeatureTap` objects on the model record nothing during the call
    (they keep the current minibatch's features) and ``strategy.mb_output`` is untouched.

    Args:
        x: inputs, on the strategy's device.
        task_labels: per-sample task labels for multi-task models (default: the current
            minibatch's first task label, else 0).
        layers: module names whose outputs to return (with their autograd graph).

    Returns:
        ``(output, {layer: feature})``.
    """
    from avalanche.models.utils import avalanche_forward

    from .nn.tap import FeatureTap, suspended

    model = strategy.model if model is None else model
    if task_labels is None:
        try:
            t = strategy.mb_task_id
        except (AssertionError, AttributeError, TypeError, IndexError):  # no minibatch (a probe)
            t = None
        label = int(t[0]) if isinstance(t, torch.Tensor) and t.numel() else 0
        task_labels = torch.full((len(x),), label, dtype=torch.long, device=x.device)
    tap = FeatureTap(model, list(layers), scoped=True) if layers else None
    try:
        with suspended(model):
            out = avalanche_forward(model, x, task_labels)
        feats = {name: tap[name] for name in layers} if tap is not None else {}
    finally:
        if tap is not None:
            tap.remove()
    return out, feats


# ------------------------------------------------------------------------------------------ optimizer
_GROUP_KEYS = ("params", "lr", "lr_scale", "name")


def _declarations(strategy):
    for plugin in strategy.plugins:
        fn = getattr(plugin, "optimizer_groups", None)
        if fn is None:
            continue
        for decl in fn(strategy) or ():
            unknown = set(decl) - set(_GROUP_KEYS)
            if unknown:
                raise ValueError(f"{plugin_name(plugin)}.optimizer_groups: unknown keys {sorted(unknown)}; "
                                 f"allowed {list(_GROUP_KEYS)}")
            yield plugin, decl


def declares_groups(strategy) -> bool:
    return any(getattr(p, "optimizer_groups", None) is not None for p in strategy.plugins)


def assemble_optimizer(strategy, reset_state: bool = False) -> None:
    """Build ``strategy.optimizer``'s parameter groups from the model and every plugin's declarations.

    Model parameters keep the hyperparameters of the group the user put them in (the first group for
    parameters added later) and train at that group's learning rate times the product of the
    ``lr_scale`` every plugin declares for them. Each plugin-owned group gets its ``lr`` (or the base
    rate times its ``lr_scale``). Groups are ordered canonically (model order, then by name), so the
    result does not depend on the order of the plugins. State of parameters that stay is kept.
    """
    opt, model = strategy.optimizer, strategy.model
    named = list(model.named_parameters())
    hp = strategy.__dict__.get("_kta_param_hp")
    if hp is None:  # first assembly: remember the user's groups (by parameter name)
        by_id = {}
        for g in opt.param_groups:
            settings = {k: v for k, v in g.items() if k not in ("params", "kta_base_lr", "kta_group")}
            for p in g["params"]:
                by_id[id(p)] = settings
        first = {k: v for k, v in opt.param_groups[0].items() if k not in ("params", "kta_base_lr", "kta_group")}
        hp = {"__default__": first}
        hp.update({n: by_id[id(p)] for n, p in named if id(p) in by_id})
        strategy._kta_param_hp = hp
    default = hp["__default__"]
    in_model = {id(p) for _, p in named}
    scale = defaultdict(lambda: 1.0)
    owned, owner_of = [], {}
    for plugin, decl in _declarations(strategy):
        params = list(decl["params"])
        lr, lr_scale = decl.get("lr"), decl.get("lr_scale")
        where = f"{plugin_name(plugin)}.optimizer_groups"
        if lr is not None:
            _check_factor("lr", lr, where)
        if lr_scale is not None:
            _check_factor("lr_scale", lr_scale, where)
        inside = [id(p) in in_model for p in params]
        if params and all(inside):
            if lr is not None:
                raise ValueError(f"{where}: model parameters are re-scaled with lr_scale, not given an absolute lr")
            for p in params:
                scale[id(p)] *= 1.0 if lr_scale is None else lr_scale
        elif any(inside):
            raise ValueError(f"{where}: a group mixes model parameters and the plugin's own; declare them apart")
        else:
            for p in params:
                if id(p) in owner_of and owner_of[id(p)] is not plugin:
                    raise ValueError(f"plugins {plugin_name(owner_of[id(p)])} and {plugin_name(plugin)} both "
                                     "declare the same parameter as their own")
                owner_of[id(p)] = plugin
            if params:
                owned.append((decl.get("name") or plugin_name(plugin), plugin, params, lr, lr_scale))
    groups, index = [], {}
    for n, p in named:
        settings = hp.get(n, default)
        key = (id(settings), scale[id(p)])
        if key not in index:
            base = settings["lr"] * scale[id(p)]
            index[key] = len(groups)
            groups.append({**settings, "params": [], "lr": base, "kta_base_lr": base,
                           "kta_group": "model" if scale[id(p)] == 1.0 else f"model x{scale[id(p)]:g}"})
        groups[index[key]]["params"].append(p)
    for name, plugin, params, lr, lr_scale in sorted(owned, key=lambda o: o[0]):
        base = lr if lr is not None else default["lr"] * (1.0 if lr_scale is None else lr_scale)
        groups.append({**default, "params": params, "lr": base, "kta_base_lr": base, "kta_group": name})
    keep = {id(p) for g in groups for p in g["params"]}
    if reset_state:
        opt.state = defaultdict(dict)
    else:
        for p in [p for p in opt.state if id(p) not in keep]:
            del opt.state[p]
    opt.param_groups[:] = groups
    _apply_lr_factors(strategy)
    strategy.optimized_param_id = dict(named)  # Avalanche's bookkeeping of what is optimized


def ensure_optimizer(plugin, strategy) -> None:
    """For a plugin that creates the modules it declares during ``before_training_exp``: on a plain
    Avalanche template (no assembly step), assemble now; a composing strategy assembles after the hook."""
    if not composes(strategy):
        assemble_optimizer(strategy)


def set_lr_factor(strategy, owner, factor: float) -> None:
    """Set ``owner``'s multiplier of every group's learning rate (1.0 removes it); factors multiply."""
    factor = _check_factor("factor", factor, f"{plugin_name(owner)}'s learning-rate factor")
    factors = strategy.__dict__.setdefault("_kta_lr_factors", {})
    if factor == 1.0:
        factors.pop(id(owner), None)
    else:
        factors[id(owner)] = factor
    _apply_lr_factors(strategy)


def _apply_lr_factors(strategy):
    factors = strategy.__dict__.get("_kta_lr_factors", {})
    total = math.prod(factors.values())
    for g in strategy.optimizer.param_groups:
        base = g.setdefault("kta_base_lr", g["lr"])
        g["lr"] = base * total
        if not factors and "kta_group" not in g:
            del g["kta_base_lr"]  # a group the assembly does not own: its rate is the user's again


# ------------------------------------------------------------------------------------------ strategy side
class ComposeMixin:
    """Mix into an Avalanche ``SupervisedTemplate`` (before it) to honour the three meeting points:
    records the criterion term, finalizes the ledger before backward, assembles the optimizer
    from the plugins' declarations, and refuses plugins that cannot share a role."""

    kta_composes = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_roles(self.plugins)

    def criterion(self):
        return self.record_criterion(super().criterion())

    def record_criterion(self, loss):
        """Remember ``loss`` as this iteration's criterion term (for a ``criterion()`` override)."""
        if self.is_training:
            self._kta_criterion = (_iteration_key(self), loss)
        return loss

    #: set ``track_loss_terms = True`` (the TensorBoard metric and ``kta run`` do) to record each
    #: iteration's terms in ``loss_terms`` and their per-experience means in ``loss_term_means()``
    track_loss_terms = False

    def _staged_plugins(self) -> list:
        """The plugins with a ``loss_stage``, ``"measure"`` before ``"arbitrate"`` (cached per plugin list:
        read every iteration, and an evaluator's attribute lookups are slow)."""
        cached = self.__dict__.get("_kta_stage_cache")
        if cached is None or cached[0] != self.plugins:
            stages = [(p, getattr(p, "loss_stage", None)) for p in self.plugins]
            cached = (list(self.plugins), [p for stage in ("measure", "arbitrate") for p, s in stages if s == stage])
            self._kta_stage_cache = cached
        return cached[1]

    def _arbitrates(self) -> bool:
        """Whether a plugin has a ``loss_stage``."""
        return bool(self._staged_plugins())

    def backward(self):
        ledger = self.__dict__.get("_kta_ledger")
        if ledger is None or ledger.key != _iteration_key(self):
            ledger = loss_ledger(self) if self._arbitrates() else None
        if ledger is not None and self._arbitrates():
            ledger.finalize()
        if self.track_loss_terms:
            self._track_terms(ledger)
        super().backward()

    def _track_terms(self, ledger):
        # detached tensors, summed on the device: no host sync per iteration (reading converts)
        terms = ledger.contributions() if ledger is not None else {CRITERION: self.loss}
        terms = {n: v.detach().sum() if isinstance(v, torch.Tensor) else float(v) for n, v in terms.items()}
        terms["total"] = self.loss.detach().sum()
        self._kta_last_terms = terms
        sums = self.__dict__.setdefault("_kta_term_sums", {})
        for n, v in terms.items():
            s, c = sums.get(n, (0.0, 0))
            sums[n] = (s + v, c + 1)

    @property
    def loss_terms(self) -> Dict[str, float]:
        """This iteration's terms ``{name: weight * value}`` plus ``"total"`` (``track_loss_terms``)."""
        return {n: float(v) for n, v in self.__dict__.get("_kta_last_terms", {}).items()}

    def loss_term_means(self, reset: bool = True) -> Dict[str, float]:
        """Mean of each loss term over the iterations since the last call (``track_loss_terms``)."""
        sums = self.__dict__.get("_kta_term_sums", {})
        out = {n: float(s) / c for n, (s, c) in sums.items() if c}
        if reset:
            self._kta_term_sums = {}
        return out

    def make_optimizer(self, reset_optimizer_state=False, **kwargs):
        if declares_groups(self) or self.__dict__.get("_kta_param_hp") is not None:
            assemble_optimizer(self, reset_state=reset_optimizer_state)
        else:
            super().make_optimizer(reset_optimizer_state=reset_optimizer_state, **kwargs)

    def _before_training_exp(self, **kwargs):
        check_roles(self.plugins)
        super()._before_training_exp(**kwargs)
        if declares_groups(self):  # heads the plugins created in their before_training_exp
            assemble_optimizer(self)

    def __getstate__(self):  # the ledger holds this iteration's graph: never part of a checkpoint
        state = self.__dict__.copy()
        state.pop("_kta_ledger", None)
        state.pop("_kta_criterion", None)
        state.pop("_kta_last_terms", None)
        state.pop("_kta_stage_cache", None)
        return state
