"""Datasets that work offline: embedded generators and local torchvision folders."""
from ._tensor import TensorClassificationDataset
from .embedded import cache_dir, digits, mnist1d, mnist1d_args

__all__ = ["TensorClassificationDataset", "cache_dir", "digits", "mnist1d", "mnist1d_args"]
