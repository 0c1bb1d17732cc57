"""The plugin authoring kit.

A KTA plugin is an Avalanche ``SupervisedPlugin`` that:

* checks its arguments in ``__init__`` with the helpers below, so a bad value
  raises ``ValueError``/``TypeError`` naming the argument;
* keeps its teachers and anchors as :func:`frozen_copy` objects, outside
  ``strategy.model`` and out of the optimizer;
* lists the attributes that make up its training state in ``state_attrs``, so
  that :meth:`KTAPlugin.state_dict` / :meth:`KTAPlugin.load_state_dict`
  round-trip it through ``torch.save`` / ``torch.load(weights_only=True)``;
* is registered for the command line with :func:`register_plugin`.

Example (a complete regularizer):

    >>> @register_plugin("weight-decay-l1")
    ... class L1(KTAPlugin):
    ...     '''L1 penalty on all weights: loss += weight * sum |w|.'''
    ...     def __init__(self, weight: float = 1e-4):
    ...         super().__init__()
    ...         self.weight = check_positive("weight", weight, strict=False)
    ...     def before_backward(self, strategy, **kwargs):
    ...         add_loss_term(strategy, "weight-decay-l1", sum(p.abs().sum() for p in strategy.model.parameters()),
    ...                       weight=self.weight, owner=self)

Plugins meet the strategy only through the loss ledger, the scoped extra forward and the
optimizer assembly of :mod:`kta_plugins.compose`.
"""
from __future__ import annotations

import copy
import fnmatch
import math
import numbers
import re
import warnings
from typing import Any, Iterable, Optional, Sequence

import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from scenarios.registry import Registry

__all__ = [
    "KTAPlugin", "PLUGINS", "register_plugin", "frozen_copy", "match_modules", "match_parameters",
    "check_type", "check_positive", "check_range", "check_fraction", "check_choice", "check_int",
    "experience_steps", "renamed_argument",
]

#: Command-line names of plugins: ``kta run --plugin NAME:key=value``.
PLUGINS = Registry("plugin")


def register_plugin(name: str, factory=None, *, help: str = ""):
    """Register a plugin class (or factory function) under a command-line name.

    ``kta run --plugin NAME:key=value,...`` then builds it, converting each
    value to the type annotated in the constructor's signature (or the type
    of its default).
    """
    return PLUGINS.register(name, factory, help=help)


# ---------------------------------------------------------------- argument checks
def check_type(name: str, value: Any, types, allow_none: bool = False):
    """``value`` if it is an instance of ``types``, else ``TypeError`` naming ``name``."""
    if value is None and allow_none:
        return value
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        expected = " or ".join(t.__name__ for t in _as_tuple(types))
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    return value


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def renamed_argument(owner: str, old: str, old_value, new: str, new_value, new_default):
    """An argument renamed to the vocabulary (docs/design.md), kept one release as a deprecated alias.

    Returns ``(value, name)``: the old argument's value and name when it was given (with a
    ``DeprecationWarning`` naming the new one), else the new argument's; check the value under the
    returned name, so errors name the argument the user wrote. Both given: a ``ValueError``.
    """
    if old_value is None:
        return new_value, new
    if new_value != new_default:
        raise ValueError(f"{old}: a deprecated alias of {new}; give only {new}")
    warnings.warn(f"{owner}({old}=...) is deprecated: use {new}=", DeprecationWarning, stacklevel=3)
    return old_value, old


def check_positive(name: str, value, strict: bool = True):
    """A finite number ``> 0`` (``>= 0`` when ``strict=False``)."""
    _check_real(name, value)
    if value < 0 or (strict and value == 0):
        raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'}, got {value!r}")
    return value


def check_int(name: str, value, minimum: Optional[int] = None):
    """An integer (not bool), optionally ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_range(name: str, value, low, high, low_inclusive: bool = True, high_inclusive: bool = True):
    """A finite number in the interval between ``low`` and ``high``."""
    _check_real(name, value)
    ok_low = value >= low if low_inclusive else value > low
    ok_high = value <= high if high_inclusive else value < high
    if not (ok_low and ok_high):
        interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def check_fraction(name: str, value):
    """A fraction in ``(0, 1]``."""
    return check_range(name, value, 0, 1, low_inclusive=False)


def check_choice(name: str, value, choices: Iterable):
    """One of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


# ---------------------------------------------------------------- modules
def _compile(patterns):
    if isinstance(patterns, str):
        patterns = [patterns]
    return [(p, re.compile(fnmatch.translate(p)) if any(c in p for c in "*?[") else None) for p in patterns]


def _matches(name: str, pat: str, rx) -> bool:
    # A plain name matches the module and everything below it ("features" -> "features.0.weight").
    if rx is not None:
        return bool(rx.match(name))
    return name == pat or name.startswith(pat + ".")


def match_modules(model: nn.Module, patterns, argument: str = "patterns") -> list[str]:
    """Names of ``model``'s submodules matched by ``patterns`` (exact names or globs).

    A pattern that matches nothing is a ``ValueError`` naming ``argument``.
    """
    names = [n for n, _ in model.named_modules() if n]
    out = []
    for pat, rx in _compile(patterns):
        hit = [n for n in names if _matches(n, pat, rx)]
        if not hit:
            raise ValueError(f"{argument}: pattern {pat!r} matches no module of {type(model).__name__}; "
                             f"modules: {names[:20]}")
        out += [n for n in hit if n not in out]
    return out


def match_parameters(model: nn.Module, patterns, argument: str = "patterns") -> list[str]:
    """Names of ``model``'s parameters under modules/parameters matched by ``patterns``."""
    names = [n for n, _ in model.named_parameters()]
    out = []
    for pat, rx in _compile(patterns):
        hit = [n for n in names if _matches(n, pat, rx)]
        if not hit:
            raise ValueError(f"{argument}: pattern {pat!r} matches no parameter of {type(model).__name__}; "
                             f"parameters: {names[:20]}")
        out += [n for n in hit if n not in out]
    return out


def experience_steps(strategy, steps: Optional[int] = None) -> int:
    """Updates a schedule spans in the current training experience: ``steps`` when given, else
    ``train_epochs * len(dataloader)`` (one batch per epoch when the loader has no length), or the strategy's
    ``train_steps`` budget when it has one; at least 1."""
    if steps is None:
        steps = getattr(strategy, "train_steps", None)
    if steps is None:
        try:
            n_iter = len(strategy.dataloader)
        except TypeError:
            n_iter = 1
        steps = strategy.train_epochs * n_iter
    return max(1, steps)


def frozen_copy(module: nn.Module, device=None) -> nn.Module:
    """A deep copy of ``module`` in ``eval()`` mode with ``requires_grad=False`` everywhere.

    Use it for teachers and anchors: keep the copy on the plugin (never inside
    ``strategy.model``), so Avalanche's ``make_optimizer`` never sees it.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(module).__name__}")
    frozen = copy.deepcopy(module)
    for m in frozen.modules():  # a deep copy inherits the original's hooks (other plugins' feature taps)
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    if device is not None:
        frozen.to(device)
    return frozen


# ---------------------------------------------------------------- base plugin
def _to_state(value):
    if isinstance(value, nn.Module):
        return {"__module_state__": {k: v.detach().cpu().clone() for k, v in value.state_dict().items()}}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_state(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"state attribute of type {type(value).__name__} cannot be saved with weights_only=True; "
        "keep tensors, modules, numbers, strings, lists and dicts in state_attrs"
    )


class KTAPlugin(SupervisedPlugin):
    """Base class of KTA plugins (an Avalanche ``SupervisedPlugin``).

    Subclasses name the attributes that make up their training state in
    ``state_attrs``. ``state_dict()`` returns them as plain tensors / numbers /
    dicts (``nn.Module`` attributes as their ``state_dict``), loadable with
    ``torch.load(..., weights_only=True)``; ``load_state_dict()`` restores them.
    A module attribute that is ``None`` at load time is rebuilt by
    :meth:`build_state_module`, which plugins with lazily created modules
    (e.g. a teacher copied at the end of an experience) override.
    """

    state_attrs: Sequence[str] = ()
    #: keyword arguments that build a working instance for ``check_plugin`` (whose default
    #: model is an MLP with submodules ``features`` and ``classifier``).
    check_args: dict = {}
    #: optional zero-argument model factory ``check_plugin`` uses instead of that MLP.
    check_model = None

    def __init__(self):
        super().__init__()

    def state_dict(self) -> dict:
        return {name: _to_state(getattr(self, name)) for name in self.state_attrs}

    def load_state_dict(self, state: dict) -> None:
        missing = [n for n in self.state_attrs if n not in state]
        if missing:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing state {missing}")
        for name in self.state_attrs:
            setattr(self, name, self._from_state(name, getattr(self, name, None), state[name]))

    def _from_state(self, name, current, saved):
        if isinstance(saved, dict) and "__module_state__" in saved:
            module = current if isinstance(current, nn.Module) else self.build_state_module(name, saved["__module_state__"])
            module.load_state_dict(saved["__module_state__"])
            return module
        if isinstance(saved, torch.Tensor) and isinstance(current, torch.Tensor):
            return saved.to(current.device)
        if isinstance(saved, dict) and isinstance(current, dict):
            return {k: self._from_state(name, current.get(k), v) for k, v in saved.items()}
        return saved

    def build_state_module(self, name: str, state: dict) -> nn.Module:
        """Create the module for state attribute ``name`` before loading ``state`` into it."""
        raise NotImplementedError(
            f"{type(self).__name__} saved a module in {name!r} but does not implement build_state_module"
        )
