"""Datasets that work offline: embedded generators and local torchvision folders."""
from ._tensor import TensorClassificationDataset
from .embedded import cache_dir, digits, mnist1d, mnist1d_args
from .local import omniglot_local, torchvision_local
from .mnist5k import mnist5k

__all__ = ["TensorClassificationDataset", "cache_dir", "digits", "mnist1d", "mnist1d_args", "mnist5k", "omniglot_local", "torchvision_local"]
from .glyphs import glyphs  # noqa: E402,F401  (few-shot: procedural Omniglot-like characters)
