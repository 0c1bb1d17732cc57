"""Pretrained backbones: torchvision (and timm, when installed) models with a new head."""
from __future__ import annotations

import os
from typing import Optional, Union

import torch
from torch import nn

__all__ = ["backbone", "replace_head", "head_name", "TORCHVISION_FAMILIES"]

#: torchvision model-name prefixes and the attribute path of their classifier.
TORCHVISION_FAMILIES = {
    "resnet": "fc", "resnext": "fc", "wide_resnet": "fc", "regnet": "fc",
    "vgg": "classifier.6", "densenet": "classifier",
    "mobilenet_v2": "classifier.1", "mobilenet_v3": "classifier.3",
    "efficientnet": "classifier.1", "alexnet": "classifier.6",
}


def head_name(model: nn.Module, name: Optional[str] = None) -> str:
    """Name of ``model``'s classification head: the torchvision family's head for ``name``,
    else timm's ``get_classifier()``, else the last ``nn.Linear``."""
    if name is not None:
        for prefix, head in sorted(TORCHVISION_FAMILIES.items(), key=lambda kv: -len(kv[0])):
            if name.startswith(prefix):
                return head
    if hasattr(model, "get_classifier"):
        clf = model.get_classifier()
        for n, m in model.named_modules():
            if m is clf:
                return n
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"model: {type(model).__name__} has no nn.Linear head to replace")
    return linears[-1]


def replace_head(model: nn.Module, head: str, num_classes: int) -> nn.Module:
    """Replace the ``nn.Linear`` called ``head`` by a freshly initialised one with ``num_classes`` outputs."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    old = model.get_submodule(head)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"head {head!r} is a {type(old).__name__}, expected nn.Linear")
    parent_name, _, attr = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                                    device=old.weight.device, dtype=old.weight.dtype))
    return model


def _load_checkpoint(path: str) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"weights: {path!r} does not hold a state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def backbone(name: str, weights: Optional[Union[str, os.PathLike]] = None, num_classes: Optional[int] = None,
             **model_args) -> nn.Module:
    """A torchvision (or timm) model by name, with pretrained weights and a new head.

    Args:
        name: a torchvision classification model (``"resnet18"``, ``"vgg11"``,
            ``"densenet121"``, ``"mobilenet_v3_small"``, ...; any name of
            ``torchvision.models.list_models()``) or, when timm is installed,
            any ``timm`` model name (prefix ``"timm/"`` to force timm).
        weights: ``None`` (random init); a torchvision weights name
            (``"DEFAULT"``, ``"IMAGENET1K_V1"``, or ``"ResNet18_Weights.IMAGENET1K_V1"``)
            loaded by torchvision's own mechanism (its cache, or a download
            when the machine is online); or the path of a local checkpoint,
            a state dict of the same architecture, loaded with
            ``torch.load(path, weights_only=True)``.
        num_classes: when given, the classification head is replaced by a new
            ``nn.Linear`` with this many outputs (after loading the weights).
        **model_args: passed to the model's constructor.

    The head's name is stored in ``model.kta_head`` (e.g. ``"fc"`` for ResNets),
    for ``Freeze(exclude=[model.kta_head])`` and friends.

    Example:
        >>> torch.save(torchvision.models.resnet18().state_dict(), "r18.pt")
        >>> model = backbone("resnet18", weights="r18.pt", num_classes=5)
        >>> model.fc
        Linear(in_features=512, out_features=5, bias=True)
    """
    import torchvision

    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a model name, got {name!r}")
    is_path = weights is not None and (isinstance(weights, os.PathLike) or os.sep in str(weights)
                                       or str(weights).endswith((".pt", ".pth", ".bin", ".ckpt")))
    if is_path and not os.path.isfile(weights):
        raise FileNotFoundError(f"weights: no checkpoint file at {str(weights)!r}")
    use_timm = name.startswith("timm/") or name not in torchvision.models.list_models(torchvision.models)
    if use_timm:
        try:
            import timm
        except ImportError:
            raise ValueError(f"name: {name!r} is not a torchvision classification model and timm is not "
                             f"installed; torchvision models: {torchvision.models.list_models(torchvision.models)[:30]}...") from None
        tname = name[len("timm/"):] if name.startswith("timm/") else name
        if weights is not None and not is_path and weights not in ("DEFAULT", "pretrained"):
            raise ValueError(f"weights: timm models take weights='DEFAULT' or a checkpoint path, got {weights!r}")
        model = timm.create_model(tname, pretrained=weights is not None and not is_path, **model_args)
    else:
        tv_weights = None if (weights is None or is_path) else str(weights)
        model = torchvision.models.get_model(name, weights=tv_weights, **model_args)
    if is_path:
        state = _load_checkpoint(str(weights))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights: checkpoint {str(weights)!r} does not match {name}: "
                             f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    head = head_name(model, None if use_timm else name)
    if num_classes is not None:
        if use_timm and hasattr(model, "reset_classifier"):
            model.reset_classifier(num_classes)
        else:
            replace_head(model, head, num_classes)
    model.kta_head = head
    return model
