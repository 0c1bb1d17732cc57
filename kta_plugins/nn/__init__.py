"""Layers and model wrappers used by KTA's plugins."""
from .backbones import backbone, head_name, replace_head
from .lora import AdapterConv2d, AdapterLinear, LoRAConv1d, LoRAConv2d, LoRALinear, inject, merge_lora, unmerge_lora
from .models import (CNN1d, CNN1dGAP, MLP, MODELS, MultiHead, SlimResNet18, SmallCNN, TorchvisionClassifier,
                     build_model, default_model_name, make_model)
from .multitask import CrossStitch, CrossStitchUnit, HardSharing, MMoE, QuantileHead, SoftSharing
from .tap import FeatureTap, resolve_module

__all__ = [
    "CNN1d", "CNN1dGAP", "MLP", "MODELS", "MultiHead", "SlimResNet18", "SmallCNN", "TorchvisionClassifier",
    "build_model", "default_model_name", "make_model", "FeatureTap", "resolve_module",
    "backbone", "head_name", "replace_head",
    "AdapterConv2d", "AdapterLinear", "LoRAConv1d", "LoRAConv2d", "LoRALinear", "inject", "merge_lora", "unmerge_lora",
    "CrossStitch", "CrossStitchUnit", "HardSharing", "MMoE", "QuantileHead", "SoftSharing",
]
