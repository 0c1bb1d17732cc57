"""Ready strategies, the strategy registry and the ``kta`` command.

Names are imported on first use (PEP 562), so that ``kta --help`` and ``kta list``
start without importing torch and Avalanche.
"""
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for static tools (IDEs, mkdocstrings); at run time the names load on first use
    from .base import Cumulative, JointTraining, KTAStrategyMixin, Naive, ProgressBar, default_evaluator
    from .results import average_accuracy, bwt, forgetting, format_report, train_and_evaluate
    from .runs import seed_everything

_EXPORTS = {
    "Cumulative": ".base", "JointTraining": ".base", "KTAStrategyMixin": ".base", "Naive": ".base",
    "ProgressBar": ".base", "default_evaluator": ".base",
    "average_accuracy": ".results", "bwt": ".results", "forgetting": ".results", "format_report": ".results",
    "train_and_evaluate": ".results", "seed_everything": ".runs",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
