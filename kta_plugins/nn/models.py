"""Small backbones for the embedded datasets."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def _check_shape(input_shape, n_classes):
    if not input_shape or any(int(s) < 1 for s in input_shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive sizes, got {input_shape!r}")
    if int(n_classes) < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes!r}")


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU] x len(hidden) -> Linear.

    Submodules are named ``features`` (everything before the head) and
    ``classifier`` (the head), the names KTA's plugins use by default.

    Args:
        input_shape: shape of one input, e.g. ``(1, 8, 8)``.
        n_classes: number of outputs.
        hidden: widths of the hidden layers.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (256,)):
        super().__init__()
        _check_shape(input_shape, n_classes)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, n_classes)
        self.feature_dim = width

    def forward(self, x):
        return self.classifier(self.features(x))


class CNN1d(nn.Module):
    """The MNIST-1D convolutional baseline (Greydanus 2020): 3 conv layers of 25 channels.

    Args:
        input_shape: ``(channels, length)``, e.g. ``(1, 40)``.
        n_classes: number of outputs.
        channels: channels of each conv layer.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, channels: int = 25):
        super().__init__()
        _check_shape(input_shape, n_classes)
        if len(input_shape) != 2:
            raise ValueError(f"CNN1d needs input_shape (channels, length), got {tuple(input_shape)}")
        c, length = input_shape
        self.features = nn.Sequential(
            nn.Conv1d(c, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            self.feature_dim = self.features(torch.zeros(1, c, length)).shape[1]
        self.classifier = nn.Linear(self.feature_dim, n_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class CNN1dGAP(nn.Module):
    """A 1-D CNN with BatchNorm and global average pooling: 3 blocks conv-BN-ReLU, then the mean over positions.

    Its features (``features``, width ``channels``) do not depend on where along the
    signal a pattern occurs, and BatchNorm normalises each batch's statistics. On
    MNIST-1D it is the model of the domain-adaptation recipe
    (``examples/domain_adaptation.py``): the alignment losses act on the pooled features.

    Args:
        input_shape: ``(channels, length)``, e.g. ``(1, 40)``.
        n_classes: number of outputs.
        channels: channels of each conv layer (default 32).
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, channels: int = 32):
        super().__init__()
        _check_shape(input_shape, n_classes)
        if len(input_shape) != 2:
            raise ValueError(f"CNN1dGAP needs input_shape (channels, length), got {tuple(input_shape)}")
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv1d(c, channels, 5, padding=2), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )
        self.feature_dim = channels
        self.classifier = nn.Linear(channels, n_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class SmallCNN(nn.Module):
    """Two conv blocks (conv-BN-ReLU-pool) and a linear head, for small images.

    Args:
        input_shape: ``(channels, height, width)``.
        n_classes: number of outputs.
        channels: channels of the two conv blocks.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, channels: int = 32):
        super().__init__()
        _check_shape(input_shape, n_classes)
        if len(input_shape) != 3:
            raise ValueError(f"SmallCNN needs input_shape (C, H, W), got {tuple(input_shape)}")
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.BatchNorm2d(2 * channels), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.feature_dim = 2 * channels
        self.classifier = nn.Linear(self.feature_dim, n_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


MODELS = {"mlp": MLP, "cnn1d": CNN1d, "cnn": SmallCNN, "cnn1d-gap": CNN1dGAP}


def make_model(name: str, input_shape: Sequence[int], n_classes: int, **kwargs) -> nn.Module:
    """Build one of :data:`MODELS` by name."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](input_shape, n_classes, **kwargs)


def default_model_name(input_shape: Sequence[int]) -> str:
    """``cnn1d`` for 1-D signals, ``mlp`` otherwise (small images train fast and well with an MLP)."""
    return "cnn1d" if len(input_shape) == 2 else "mlp"
