"""Command-line names of strategies (``kta run --strategy NAME``)."""
from __future__ import annotations

from scenarios.registry import Registry

from .base import Cumulative, JointTraining, Naive

__all__ = ["STRATEGIES", "register_strategy", "load_all"]

#: Strategies by command-line name. A factory is called with ``model``,
#: ``optimizer`` and the common strategy arguments (``train_epochs``,
#: ``train_mb_size``, ``plugins``, ``seed``, ...) plus the ``key=value`` options.
STRATEGIES = Registry("strategy")
register_strategy = STRATEGIES.register

register_strategy("naive", Naive, help="fine-tune on each experience in turn (lower bound)")
register_strategy("cumulative", Cumulative, help="retrain on all experiences seen so far")
register_strategy("joint", JointTraining, help="train once on the whole stream (offline upper bound)")


#: Modules of ``strategies`` that define no strategy (the command line and what runs it).
_NOT_STRATEGIES = ("cli", "registry", "__main__", "compare", "runs", "results", "distributed", "catalog",
                   "catalog_index")


def load_all() -> None:
    """Import every module of ``strategies`` (and the plugins) so that all names register."""
    import importlib
    import pkgutil
    from pathlib import Path

    from kta_plugins.registry import load_all as load_plugins

    load_plugins()
    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.name not in _NOT_STRATEGIES:
            importlib.import_module(f"strategies.{mod.name}")
