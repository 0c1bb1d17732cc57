"""``Distill``: fine-tuning with one distillation plugin (``kta run --strategy distill``)."""
from __future__ import annotations

from typing import Literal, Optional, Sequence, Union

from torch import nn

from kta_plugins.distill import DKD, KD, PKT, RKD, AttentionTransfer, FitNets

from .base import Naive
from .registry import register_strategy

__all__ = ["Distill", "DISTILLATION_METHODS"]

#: ``method=`` names and their plugins.
DISTILLATION_METHODS = {
    "kd": KD, "fitnets": FitNets, "attention": AttentionTransfer, "rkd": RKD, "dkd": DKD, "pkt": PKT,
}


class Distill(Naive):
    """Naive fine-tuning plus one distillation plugin from :mod:`kta_plugins.distill`.

    ``teacher="previous"`` (default) distils, in every experience, from the
    student as it was at the end of the previous one (LwF-style, with any
    loss); an ``nn.Module`` or a checkpoint path distils from a fixed teacher.

    Args:
        model: as :class:`strategies.Naive`.
        optimizer: as :class:`strategies.Naive`.
        method: ``kd`` (default), ``fitnets``, ``attention``, ``rkd``, ``dkd`` or ``pkt``.
        teacher: an ``nn.Module``, a checkpoint path or ``"previous"``.
        method_args: the plugin's other arguments, e.g. ``{"temperature": 2.0}``.
        plugins: further plugins (the distillation plugin comes first).
        **kwargs: the other arguments of :class:`strategies.Naive`.

    The plugin is ``strategy.distiller``.

    Example:
        >>> strategy = Distill(model=mlp, optimizer=opt, method="kd", teacher=cnn,
        ...                    method_args={"temperature": 4.0, "alpha": 0.9})
        >>> strategy.train(bm.train_stream[0])
        >>> # kta run --scenario split-mnist1d --strategy "distill:method=dkd,method_args={'beta':2.0}"
    """

    def __init__(self, *, model: nn.Module, optimizer,
                 method: Literal["kd", "fitnets", "attention", "rkd", "dkd", "pkt"] = "kd",
                 teacher: Union[str, nn.Module] = "previous", method_args: Optional[dict] = None,
                 plugins: Optional[Sequence] = None, **kwargs):
        if method not in DISTILLATION_METHODS:
            raise ValueError(f"method must be one of {sorted(DISTILLATION_METHODS)}, got {method!r}")
        if method_args is not None and not isinstance(method_args, dict):
            raise TypeError(f"method_args must be a dict of the plugin's arguments, got {type(method_args).__name__}")
        try:
            self.distiller = DISTILLATION_METHODS[method](teacher=teacher, **(method_args or {}))
        except TypeError as e:
            raise TypeError(f"method_args: {e}") from None
        super().__init__(model=model, optimizer=optimizer, plugins=[self.distiller, *(plugins or [])], **kwargs)


register_strategy("distill", Distill, help="fine-tuning + a distillation plugin (teacher=previous, a module or a checkpoint)")
