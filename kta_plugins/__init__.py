"""KTA plugins: knowledge transfer and adaptation techniques as Avalanche plugins."""
from .base import (
    PLUGINS, KTAPlugin, check_choice, check_fraction, check_int, check_positive, check_range,
    check_type, frozen_copy, match_modules, match_parameters, register_plugin,
)
from . import registry  # noqa: F401  (registers Avalanche's replay / lwf / ewc)

__all__ = [
    "PLUGINS", "KTAPlugin", "check_choice", "check_fraction", "check_int", "check_positive",
    "check_range", "check_type", "frozen_copy", "match_modules", "match_parameters", "register_plugin",
]
