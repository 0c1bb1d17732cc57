"""Streams of tasks (Avalanche ``CLScenario``) built from offline datasets."""
from .registry import SCENARIOS, register_scenario
from .streams import class_incremental, domain_incremental, load_dataset, offline, stream_info, task_incremental

__all__ = [
    "SCENARIOS", "register_scenario", "class_incremental", "domain_incremental",
    "load_dataset", "offline", "stream_info", "task_incremental",
]
