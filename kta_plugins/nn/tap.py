"""FeatureTap: read a model's intermediate outputs by module name with forward hooks."""
from __future__ import annotations

import contextlib
import difflib
import weakref
from typing import Dict, Sequence, Union

import torch
from torch import nn


def resolve_module(model: nn.Module, name: str, argument: str = "layer") -> nn.Module:
    """``model``'s submodule called ``name`` (as in ``named_modules()``), or a ``ValueError``
    naming ``argument`` and the closest existing names."""
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=5)
        hint = f"; did you mean {close}?" if close else f"; modules: {[n for n in modules if n][:20]}"
        raise ValueError(f"{argument}={name!r} is not a module of {type(model).__name__}{hint}")
    return modules[name]


#: every tap with hooks attached (for kta_plugins.testing.check_composition's tap clause)
_LIVE: "weakref.WeakSet[FeatureTap]" = weakref.WeakSet()


def live_taps(model: nn.Module) -> list:
    """The :class:`FeatureTap` objects currently attached to ``model``."""
    return [t for t in list(_LIVE) if t._root == id(model) and t._handles]


#: ids of models inside an extra forward (kta_plugins.compose.extra_forward): depth per model
_SUSPENDED: Dict[int, int] = {}


@contextlib.contextmanager
def suspended(model: nn.Module):
    """While inside, taps on ``model`` record nothing (except ``scoped`` ones): an extra forward
    (other inputs than the current minibatch) leaves every plugin's features as they were."""
    key = id(model)
    _SUSPENDED[key] = _SUSPENDED.get(key, 0) + 1
    try:
        yield
    finally:
        if _SUSPENDED[key] == 1:
            del _SUSPENDED[key]
        else:
            _SUSPENDED[key] -= 1


class FeatureTap:
    """Records the outputs of named submodules at every forward pass.

    Forward hooks are attached to the named modules (``model.named_modules()``
    names, e.g. ``"features"`` or ``"layer3.1.conv2"``); the user's model is not
    edited. Outputs keep their autograd graph, so losses on them train the model.

    Args:
        model: the network to observe.
        names: module names to record.
        detach: store detached outputs (for teachers; saves memory).
        scoped: record during extra forwards too (the tap of the extra forward itself); other
            taps keep the current minibatch's features while
            :func:`kta_plugins.compose.extra_forward` runs.

    Example:
        >>> tap = FeatureTap(model, ["features"])
        >>> logits = model(x)
        >>> h = tap["features"]          # output of model.features for x
        >>> tap.remove()                 # detach the hooks
    """

    def __init__(self, model: nn.Module, names: Union[str, Sequence[str]], detach: bool = False,
                 scoped: bool = False):
        if isinstance(names, str):
            names = [names]
        if not names:
            raise ValueError("names must list at least one module name")
        self.names = list(names)
        self.detach = detach
        self.scoped = scoped
        self._root = id(model)
        self.features: Dict[str, torch.Tensor] = {}
        self._handles = []
        for name in self.names:
            module = resolve_module(model, name, argument="names")
            self._handles.append(module.register_forward_hook(self._hook(name)))
        _LIVE.add(self)

    def _hook(self, name):
        def hook(module, inputs, output):
            if _SUSPENDED and not self.scoped and self._root in _SUSPENDED:
                return  # an extra forward on other inputs: keep the current minibatch's features
            self.features[name] = output.detach() if self.detach else output
        return hook

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.features:
            raise KeyError(f"no output recorded for {name!r} yet: run a forward pass first")
        return self.features[name]

    def clear(self):
        self.features.clear()

    def remove(self):
        """Detach the hooks; the tap records nothing afterwards."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.features.clear()
        _LIVE.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __getstate__(self):  # hooks handles are not picklable; a copied tap records nothing
        return {"names": self.names, "detach": self.detach, "scoped": self.scoped, "_root": None,
                "features": {}, "_handles": []}
