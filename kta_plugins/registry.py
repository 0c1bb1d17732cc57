"""Command-line names of plugins, including Avalanche's own ``replay``, ``lwf`` and ``ewc``."""
from __future__ import annotations

from typing import Literal, Optional

from .base import PLUGINS, register_plugin

__all__ = ["PLUGINS", "register_plugin", "load_all"]


def load_all() -> None:
    """Import every technique subpackage of ``kta_plugins`` so that its plugins register."""
    import importlib
    import pkgutil

    import kta_plugins

    for mod in pkgutil.iter_modules(kta_plugins.__path__):
        if mod.ispkg and mod.name not in ("nn",):
            importlib.import_module(f"kta_plugins.{mod.name}")


@register_plugin("replay")
def replay(mem_size: int = 200, batch_size: Optional[int] = None, batch_size_mem: Optional[int] = None):
    """Avalanche's ReplayPlugin: experience replay from a class-balanced-by-experience buffer."""
    from avalanche.training.plugins import ReplayPlugin

    if mem_size < 1:
        raise ValueError(f"mem_size must be >= 1, got {mem_size}")
    return ReplayPlugin(mem_size=mem_size, batch_size=batch_size, batch_size_mem=batch_size_mem)


@register_plugin("lwf")
def lwf(alpha: float = 1.0, temperature: float = 2.0):
    """Avalanche's LwFPlugin: Learning without Forgetting (Li & Hoiem 2016)."""
    from avalanche.training.plugins import LwFPlugin

    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return LwFPlugin(alpha=alpha, temperature=temperature)


@register_plugin("ewc")
def ewc(ewc_lambda: float = 100.0, mode: Literal["separate", "online"] = "separate",
        decay_factor: Optional[float] = None):
    """Avalanche's EWCPlugin: Elastic Weight Consolidation (Kirkpatrick et al. 2017)."""
    from avalanche.training.plugins import EWCPlugin

    if ewc_lambda < 0:
        raise ValueError(f"ewc_lambda must be >= 0, got {ewc_lambda}")
    if mode == "online" and decay_factor is None:
        decay_factor = 1.0
    return EWCPlugin(ewc_lambda=ewc_lambda, mode=mode, decay_factor=decay_factor)
