"""FeatureTap: read a model's intermediate outputs by module name with forward hooks."""
from __future__ import annotations

import difflib
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


class FeatureTap:
    """Records the outputs of named submodules at every forward pass.

    Forward hooks are attached to the named modules (``model.named_modules()``
    names, e.g. ``"features"`` or ``"layer3.1.conv2"``); the user's model is not
    edited. Outputs keep their autograd graph, so losses on them train the model.

    Args:
        model: the network to observe.
        names: module names to record.
        detach: store detached outputs (for teachers; saves memory).

    Example:
        >>> tap = FeatureTap(model, ["features"])
        >>> logits = model(x)
        >>> h = tap["features"]          # output of model.features for x
        >>> tap.remove()                 # detach the hooks
    """

    def __init__(self, model: nn.Module, names: Union[str, Sequence[str]], detach: bool = False):
        if isinstance(names, str):
            names = [names]
        if not names:
            raise ValueError("names must list at least one module name")
        self.names = list(names)
        self.detach = detach
        self.features: Dict[str, torch.Tensor] = {}
        self._handles = []
        for name in self.names:
            module = resolve_module(model, name, argument="names")
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, inputs, output):
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __getstate__(self):  # hooks handles are not picklable; a copied tap records nothing
        return {"names": self.names, "detach": self.detach, "features": {}, "_handles": []}
