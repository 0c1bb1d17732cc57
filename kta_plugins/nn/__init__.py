"""Layers and model wrappers used by KTA's plugins."""
from .models import CNN1d, MLP, MODELS, SmallCNN, default_model_name, make_model
from .tap import FeatureTap, resolve_module

__all__ = ["CNN1d", "MLP", "MODELS", "SmallCNN", "default_model_name", "make_model", "FeatureTap", "resolve_module"]
