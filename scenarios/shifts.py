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


class Contrast(Shift):
    """Change contrast and brightness: ``x -> gain * x + offset`` (a camera's gain and black level).

    Args:
        gain: multiplier of the intensities (> 0; < 1 lowers the contrast).
        offset: value added afterwards (e.g. a brighter background).
    """

    name = "contrast"

    def __init__(self, gain: float = 0.5, offset: float = 0.3):
        if not (math.isfinite(gain) and gain > 0):
            raise ValueError(f"gain must be a finite number > 0, got {gain!r}")
        if not math.isfinite(offset):
            raise ValueError(f"offset must be finite, got {offset!r}")
        self.gain = float(gain)
        self.offset = float(offset)

    def __call__(self, x):
        return self.gain * x + self.offset


class LensWarp(Shift):
    """Radial lens distortion of images ``(n, C, H, W)``: the output pixel at normalised radius ``r``
    samples the input at ``r (1 + k r^2)`` (``k > 0``: pincushion-like magnification of the centre,
    ``k < 0``: barrel), bilinear, zeros outside.

    Args:
        k: distortion coefficient (finite, ``> -1``).
    """

    name = "lens-warp"

    def __init__(self, k: float = 0.3):
        if not (math.isfinite(k) and k > -1):
            raise ValueError(f"k must be a finite number > -1, got {k!r}")
        self.k = float(k)

    def __call__(self, x):
        if x.ndim != 4:
            raise ValueError(f"LensWarp needs images (n, C, H, W), got shape {tuple(x.shape)}")
        n, _, h, w = x.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, dtype=x.dtype), torch.linspace(-1, 1, w, dtype=x.dtype),
                                indexing="ij")
        r2 = xs ** 2 + ys ** 2
        f = 1 + self.k * r2
        grid = torch.stack([xs * f, ys * f], -1).expand(n, h, w, 2)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
