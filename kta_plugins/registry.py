"""Command-line names of plugins, including Avalanche's own ``replay``, ``lwf`` and ``ewc``."""
from __future__ import annotations

from typing import Literal, Optional

from .base import PLUGINS, check_choice, check_int, check_positive, register_plugin

__all__ = ["PLUGINS", "register_plugin", "load_all"]


def load_all() -> None:
    """Import every technique subpackage of ``kta_plugins`` so that its plugins register."""
    import importlib
    import pkgutil
    from pathlib import Path

    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.ispkg and mod.name not in ("nn",):
            importlib.import_module(f"kta_plugins.{mod.name}")
    importlib.import_module("kta_plugins.avalanche_plugins")  # Avalanche's catalogue (a module, not a package)


@register_plugin("replay")
def replay(mem_size: int = 200, batch_size: Optional[int] = None, batch_size_mem: Optional[int] = None,
           storage: Literal["experience", "class", "reservoir"] = "experience", task_balanced: bool = False):
    """Avalanche's ReplayPlugin: experience replay from a buffer of past samples.

    ``storage``: Avalanche's storage policy: ``experience`` (default: ``mem_size`` split evenly over the
    experiences seen, each part a random sample of its experience), ``class`` (split evenly over the
    classes seen) or ``reservoir`` (one random sample of everything seen). ``task_balanced``: the memory
    part of each batch balanced over task labels. Each batch holds ``batch_size`` new samples (default:
    the strategy's) and ``batch_size_mem`` memory samples (default: the same). On tensor-backed streams
    KTA holds the buffer and batches it as tensors (:mod:`kta_plugins.replay`: the same samples and batches
    as Avalanche's policies and ``ReplayDataLoader``).
    """
    from .replay import Replay, TensorClassBalancedBuffer, TensorExperienceBalancedBuffer, TensorReservoirBuffer

    check_int("mem_size", mem_size, minimum=1)
    for name, value in (("batch_size", batch_size), ("batch_size_mem", batch_size_mem)):
        if value is not None:
            check_int(name, value, minimum=1)
    check_choice("storage", storage, ["experience", "class", "reservoir"])
    if not isinstance(task_balanced, bool):
        raise TypeError(f"task_balanced must be a bool, got {task_balanced!r}")
    policy = {"experience": lambda: TensorExperienceBalancedBuffer(max_size=mem_size, adaptive_size=True),
              "class": lambda: TensorClassBalancedBuffer(max_size=mem_size, adaptive_size=True),
              "reservoir": lambda: TensorReservoirBuffer(max_size=mem_size)}[storage]()
    return Replay(mem_size=mem_size, batch_size=batch_size, batch_size_mem=batch_size_mem,
                        task_balanced_dataloader=task_balanced, storage_policy=policy)


@register_plugin("lwf")
def lwf(alpha: float = 1.0, temperature: float = 2.0):
    """Avalanche's LwFPlugin: Learning without Forgetting (Li & Hoiem 2016)."""
    from .avalanche_plugins import LwF

    check_positive("alpha", alpha, strict=False)
    check_positive("temperature", temperature)
    return LwF(alpha=alpha, temperature=temperature)


@register_plugin("ewc")
def ewc(ewc_lambda: float = 100.0, mode: Literal["separate", "online"] = "separate",
        decay_factor: Optional[float] = None):
    """Avalanche's EWCPlugin: Elastic Weight Consolidation (Kirkpatrick et al. 2017)."""
    from .avalanche_plugins import EWC

    check_positive("ewc_lambda", ewc_lambda, strict=False)
    check_choice("mode", mode, ["separate", "online"])
    if decay_factor is not None:
        if mode != "online":
            raise ValueError(f"decay_factor is only used with mode='online', got mode={mode!r}")
        check_positive("decay_factor", decay_factor)
    elif mode == "online":
        decay_factor = 1.0
    return EWC(ewc_lambda=ewc_lambda, mode=mode, decay_factor=decay_factor)
