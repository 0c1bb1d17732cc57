"""Domain shifts as deterministic batch transforms.

Each shift maps a batch of inputs ``x`` (``(n, ...)`` tensor) to shifted inputs of
the same shape. Shifts are applied once, when a stream is built, so the shifted
domains stay tensor-backed (and train on KTA's fast data path). Randomness comes
from the shift's own ``seed``: the same shift always gives the same domain.
"""
from __future__ import annotations

import math

import torch


class Shift:
    """Base class: a named, seeded, deterministic batch transform."""

    name = "shift"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Identity(Shift):
    """No shift (the source domain)."""

    name = "identity"

    def __call__(self, x):
        return x.clone()


class Permutation(Shift):
    """A fixed random permutation of the input features (Permuted MNIST, Goodfellow et al. 2013).

    Args:
        seed: seed of the permutation.
    """

    name = "permutation"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def __call__(self, x):
        flat = x.reshape(len(x), -1)
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(flat.shape[1], generator=g)
        return flat[:, perm].reshape(x.shape)


class Rotation(Shift):
    """Rotate images ``(n, C, H, W)`` by a fixed angle in degrees (Rotated MNIST).

    Args:
        degrees: rotation angle, counter-clockwise.
    """

    name = "rotation"

    def __init__(self, degrees: float):
        if not math.isfinite(degrees):
            raise ValueError(f"degrees must be finite, got {degrees!r}")
        self.degrees = float(degrees)

    def __call__(self, x):
        if x.ndim != 4:
            raise ValueError(f"Rotation needs images (n, C, H, W), got shape {tuple(x.shape)}")
        from torchvision.transforms.functional import InterpolationMode, rotate

        return rotate(x, self.degrees, interpolation=InterpolationMode.BILINEAR)


class GaussianNoise(Shift):
    """Add i.i.d. Gaussian noise of standard deviation ``std``.

    Args:
        std: noise standard deviation (>= 0).
        seed: seed of the noise draw.
    """

    name = "noise"

    def __init__(self, std: float, seed: int = 0):
        if not (std >= 0 and math.isfinite(std)):
            raise ValueError(f"std must be a finite number >= 0, got {std!r}")
        self.std = float(std)
        self.seed = int(seed)

    def __call__(self, x):
        g = torch.Generator().manual_seed(self.seed)
        return x + self.std * torch.randn(x.shape, generator=g, dtype=x.dtype)
