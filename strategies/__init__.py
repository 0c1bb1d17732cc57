"""Ready strategies, the strategy registry and the ``kta`` command."""
from .base import Cumulative, JointTraining, KTAStrategyMixin, Naive, ProgressBar, default_evaluator
from .results import average_accuracy, bwt, forgetting, format_report, train_and_evaluate

__all__ = [
    "Cumulative", "JointTraining", "KTAStrategyMixin", "Naive", "ProgressBar", "default_evaluator",
    "average_accuracy", "bwt", "forgetting", "format_report", "train_and_evaluate",
]
