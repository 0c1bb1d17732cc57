"""Freeze parameters by module name or pattern (the linear probe's building block)."""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from kta_plugins.base import KTAPlugin, check_type, match_parameters, register_plugin

__all__ = ["Freeze", "freeze", "unfreeze", "layer_groups", "clear_frozen_grads", "set_frozen_bn_eval", "name_patterns"]


def name_patterns(name: str, value, allow_empty: bool = False) -> list[str]:
    """Check the argument ``name``: one module/parameter name pattern or a list of them; returns the list."""
    if isinstance(value, str):
        value = [value]
    check_type(name, value, (list, tuple))
    for i, v in enumerate(value):
        check_type(f"{name}[{i}]", v, str)
    if not value and not allow_empty:
        raise ValueError(f"{name} must list at least one module/parameter name or pattern")
    return list(value)


def layer_groups(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly, from the output back to the input.

    For ``MLP((1, 8, 8), 10, hidden=(64, 32))`` this is
    ``["classifier", "features.3", "features.1"]``: the default layer groups of
    :class:`~kta_plugins.transfer.GradualUnfreeze` and
    :class:`~kta_plugins.transfer.LayerwiseLR`.
    """
    names = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    return names[::-1]


def freeze(model: nn.Module, patterns, exclude: Sequence[str] = (), argument: str = "patterns") -> list[str]:
    """Set ``requires_grad=False`` on the parameters matched by ``patterns`` but not ``exclude``.

    Returns the frozen parameter names. A pattern matching nothing is a
    ``ValueError`` naming ``argument``.
    """
    names = match_parameters(model, patterns, argument=argument)
    keep = set(match_parameters(model, exclude, argument="exclude")) if exclude else set()
    params = dict(model.named_parameters())
    out = []
    for n in names:
        if n in keep:
            continue
        params[n].requires_grad_(False)
        params[n].grad = None
        out.append(n)
    return out


def unfreeze(model: nn.Module, patterns, argument: str = "patterns") -> list[str]:
    """Set ``requires_grad=True`` on the parameters matched by ``patterns``; returns their names."""
    names = match_parameters(model, patterns, argument=argument)
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(True)
    return names


def clear_frozen_grads(model: nn.Module, names: Optional[Iterable[str]] = None) -> None:
    """Drop the gradient of every parameter with ``requires_grad=False`` (or of ``names``).

    Torch optimizers skip parameters whose ``grad`` is ``None``: no step, no
    momentum, no weight decay. Avalanche's ``update_optimizer`` keeps every
    model parameter in the optimizer, so this is what keeps a frozen parameter
    bit-for-bit unchanged even when it still holds momentum from before it was frozen.
    """
    if names is None:
        for p in model.parameters():
            if not p.requires_grad:
                p.grad = None
    else:
        params = dict(model.named_parameters())
        for n in names:
            params[n].grad = None


def set_frozen_bn_eval(model: nn.Module) -> None:
    """During training: put every BatchNorm whose parameters are all frozen (or that has none)
    into ``eval()``, so its running statistics stay as they are, and every other one into
    ``train()``."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            m.train(not all(not p.requires_grad for p in ps))


@register_plugin("freeze", help="freeze parameters by name/pattern (linear probing, partial fine-tuning)")
class Freeze(KTAPlugin):
    """Freeze parameters by module/parameter name or glob pattern (linear probing, partial fine-tuning).

    Yosinski et al. 2014, "How transferable are features in deep neural
    networks?": copy the first layers of a network trained on a source task and
    keep them fixed while the rest learns the target. With ``patterns=["*"]``
    and ``exclude=["classifier"]`` this is a linear probe.

    Mechanism: at the start of every training experience (after Avalanche's
    ``update_optimizer`` has put every model parameter back into the
    optimizer) matched parameters get ``requires_grad=False`` and their
    optimizer state (momentum, Adam moments) is dropped; before every update
    their ``grad`` is set to ``None``, so torch optimizers skip them (no step,
    no weight decay). Frozen weights stay bit-for-bit unchanged. BatchNorm
    layers whose parameters are all frozen are kept in ``eval()`` mode when
    ``freeze_bn=True``, so their running statistics do not move either. If
    nothing the loss depends on is left trainable (e.g. the default
    ``patterns=["*"]`` without ``exclude``), a ``ValueError`` naming
    ``patterns`` / ``exclude`` is raised before the first backward pass.

    Args:
        patterns: module or parameter names / globs to freeze (``"features"``
            freezes everything under ``features``; ``"*"`` everything).
        exclude: names / globs left trainable (default none).
        freeze_bn: keep fully frozen BatchNorm layers in eval mode (default True).

    Example:
        >>> probe = Freeze(patterns=["*"], exclude=["classifier"])
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[probe])
        >>> strategy.train(bm.train_stream[0])    # only model.classifier changes
    """

    roles = ("freezes-layers",)  # kta_plugins.compose.check_roles

    state_attrs = ("frozen",)
    #: ``check_plugin`` freezes the default MLP's backbone and trains its head (the default
    #: ``patterns=["*"]`` freezes every parameter, leaving nothing to train).
    check_args = {"patterns": ["features"]}

    def __init__(self, patterns: Sequence[str] = ("*",), exclude: Sequence[str] = (), freeze_bn: bool = True):
        super().__init__()
        self.patterns = name_patterns("patterns", patterns)
        self.exclude = name_patterns("exclude", exclude, allow_empty=True)
        self.freeze_bn = check_type("freeze_bn", freeze_bn, bool)
        self.frozen: list[str] = []

    def before_training_exp(self, strategy, **kwargs):
        model = strategy.model
        self.frozen = freeze(model, self.patterns, self.exclude)
        params = dict(model.named_parameters())
        for n in self.frozen:
            strategy.optimizer.state.pop(params[n], None)

    def before_training_epoch(self, strategy, **kwargs):
        if self.freeze_bn:
            set_frozen_bn_eval(strategy.model)

    def before_backward(self, strategy, **kwargs):
        loss = strategy.loss
        if (isinstance(loss, torch.Tensor) and not loss.requires_grad
                and not any(p.requires_grad for p in strategy.model.parameters())):
            raise ValueError(
                f"Freeze: patterns={self.patterns} exclude={self.exclude} froze every parameter the loss "
                "depends on; nothing is left to train (leave the head trainable, e.g. exclude=['classifier'])")

    def before_update(self, strategy, **kwargs):
        clear_frozen_grads(strategy.model, self.frozen)
