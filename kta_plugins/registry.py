"""Command-line names of plugins, including Avalanche's own ``replay``, ``lwf`` and ``ewc``."""
from __future__ import annotations

from typing import Literal, Optional

from .base import PLUGINS, check_choice, check_int, check_positive, register_plugin

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

    check_int("mem_size", mem_size, minimum=1)
    for name, value in (("batch_size", batch_size), ("batch_size_mem", batch_size_mem)):
        if value is not None:
            check_int(name, value, minimum=1)
    return ReplayPlugin(mem_size=mem_size, batch_size=batch_size, batch_size_mem=batch_size_mem)


@register_plugin("lwf")
def lwf(alpha: float = 1.0, temperature: float = 2.0):
    """Avalanche's LwFPlugin: Learning without Forgetting (Li & Hoiem 2016)."""
    from avalanche.training.plugins import LwFPlugin

    check_positive("alpha", alpha, strict=False)
    check_positive("temperature", temperature)
    return LwFPlugin(alpha=alpha, temperature=temperature)


@register_plugin("ewc")
def ewc(ewc_lambda: float = 100.0, mode: Literal["separate", "online"] = "separate",
        decay_factor: Optional[float] = None):
    """Avalanche's EWCPlugin: Elastic Weight Consolidation (Kirkpatrick et al. 2017)."""
    from avalanche.training.plugins import EWCPlugin

    check_positive("ewc_lambda", ewc_lambda, strict=False)
    check_choice("mode", mode, ["separate", "online"])
    if decay_factor is not None:
        if mode != "online":
            raise ValueError(f"decay_factor is only used with mode='online', got mode={mode!r}")
        check_positive("decay_factor", decay_factor)
    elif mode == "online":
        decay_factor = 1.0
    return EWCPlugin(ewc_lambda=ewc_lambda, mode=mode, decay_factor=decay_factor)
