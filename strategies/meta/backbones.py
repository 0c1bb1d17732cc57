"""Backbones for few-shot learning: the Conv-4 of the few-shot literature."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["Conv4", "default_backbone"]


class Conv4(nn.Module):
    """Four blocks of conv3x3 - BatchNorm - ReLU - maxpool2 (Vinyals et al. 2016; Finn et al. 2017).

    BatchNorm uses the statistics of the current batch (``track_running_stats=False``),
    as in MAML, so it behaves the same in training and evaluation episodes.
    ``features`` (the four blocks, flattened) and ``classifier`` (linear, ``n_outputs``)
    are the submodules KTA's meta-learning strategies use.

    Args:
        input_shape: ``(C, H, W)``, e.g. ``(1, 28, 28)``.
        n_outputs: outputs of the head (``n_ways`` for MAML-style methods).
        channels: channels of every block (default 32; the literature uses 64).
    """

    def __init__(self, input_shape: Sequence[int], n_outputs: int, channels: int = 32):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        c = input_shape[0]
        blocks = []
        for i in range(4):
            blocks += [nn.Conv2d(c if i == 0 else channels, channels, 3, padding=1),
                       nn.BatchNorm2d(channels, track_running_stats=False), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.input_shape = tuple(input_shape)
        with torch.no_grad():
            self.feature_dim = self.features(torch.zeros(2, *input_shape)).shape[1]
        self.classifier = nn.Linear(self.feature_dim, n_outputs)

    def forward(self, x):
        return self.classifier(self.features(x))


def default_backbone(input_shape: Sequence[int], n_outputs: int) -> nn.Module:
    """KTA's MNIST-1D CNN for 1-D signals, an MLP (hidden 256, 128) otherwise.

    Images get an MLP rather than :class:`Conv4` to keep CPU runs short (Conv-4 costs
    about 100x more per image); pass ``Conv4`` yourself for the literature's backbone.
    """
    from kta_plugins.nn import CNN1d, MLP

    if len(input_shape) == 2:
        net = CNN1d(input_shape, n_outputs)
    else:
        net = MLP(input_shape, n_outputs, hidden=(256, 128))
    net.input_shape = tuple(input_shape)
    return net
