"""Generated glyphs: a procedural, offline stand-in for Omniglot.

Each class is a "character" made of 1 to ``max_strokes`` random strokes
(quadratic Bezier curves between random points of the canvas, some of them
joined end to start like pen strokes). Each sample of a class is the class's
character drawn again with small random distortions, as by another hand: a
random affine map (rotation, scale, shear, shift), a jitter of every control
point, and a random pen width. Strokes are rendered by splatting densely
sampled points onto the grid and blurring them, all in vectorised torch, so a
thousand classes of 20 samples take about a second; the arrays are cached under
:func:`scenarios.datasets.cache_dir` anyway.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._tensor import TensorClassificationDataset
from .embedded import cached_arrays

__all__ = ["glyphs", "glyph_arrays"]

_VERSION = 2


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _characters(n_classes: int, max_strokes: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Control points ``(C, S, 3, 2)`` in [-1, 1] and stroke masks ``(C, S)`` of ``n_classes`` characters."""
    S = max_strokes
    n_strokes = torch.randint(1, S + 1, (n_classes,), generator=g)
    mask = torch.arange(S)[None, :] < n_strokes[:, None]
    start = torch.rand(n_classes, S, 2, generator=g) * 1.5 - 0.75
    end = torch.rand(n_classes, S, 2, generator=g) * 1.5 - 0.75
    # Half of the strokes start where the previous one ended (a pen that does not lift).
    joined = torch.rand(n_classes, S, generator=g) < 0.5
    for s in range(1, S):
        start[:, s] = torch.where(joined[:, s, None], end[:, s - 1], start[:, s])
    # Make strokes long enough to be seen: push too-short ones apart.
    d = end - start
    length = d.norm(dim=-1, keepdim=True)
    end = torch.where(length < 0.5, start + d / length.clamp_min(1e-3) * 0.5, end).clamp(-0.85, 0.85)
    mid = (start + end) / 2 + (torch.rand(n_classes, S, 2, generator=g) - 0.5) * 1.2
    return torch.stack([start, mid, end], dim=2), mask


def _render(ctrl: torch.Tensor, mask: torch.Tensor, width: torch.Tensor, size: int, n_points: int = 48) -> torch.Tensor:
    """Rasterise quadratic Bezier strokes ``ctrl (M, S, 3, 2)`` to images ``(M, size, size)`` in [0, 1]."""
    M, S = ctrl.shape[:2]
    t = torch.linspace(0, 1, n_points)[None, None, :, None]
    p0, p1, p2 = ctrl[:, :, 0, None], ctrl[:, :, 1, None], ctrl[:, :, 2, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2  # (M, S, P, 2)
    pts = (pts + 1) / 2 * (size - 1)  # pixel coordinates
    weight = mask[:, :, None].expand(M, S, n_points).float()
    pts = pts.reshape(M, -1, 2)
    weight = weight.reshape(M, -1)
    # Bilinear splatting of every point onto the 4 pixels around it.
    x, y = pts[..., 0].clamp(0, size - 1.001), pts[..., 1].clamp(0, size - 1.001)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    img = torch.zeros(M, size * size)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        idx = ((y0 + dy) * size + (x0 + dx)).long()
        img.scatter_add_(1, idx, w * weight)
    img = img.view(M, 1, size, size).clamp(max=1.0)
    # Pen: a Gaussian blur whose width varies per sample.
    r = 2
    ax = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(ax[None, :] ** 2) / (2 * width[:, None] ** 2))  # (M, 5)
    k = k / k.sum(dim=1, keepdim=True)
    # Separable blur per sample: group conv with one kernel per image.
    img = img.view(1, M, size, size)
    img = torch.nn.functional.conv2d(torch.nn.functional.pad(img, (r, r, 0, 0)), k.view(M, 1, 1, -1), groups=M)
    img = torch.nn.functional.conv2d(torch.nn.functional.pad(img, (0, 0, r, r)), k.view(M, 1, -1, 1), groups=M)
    img = img.view(M, size, size)
    img = img / img.amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    return (img * 1.6).clamp(0, 1)


def glyph_arrays(n_classes: int = 1000, samples_per_class: int = 20, size: int = 28, max_strokes: int = 4,
                 distortion: float = 1.0, seed: int = 0) -> dict:
    """Generate (or read from the cache) the raw glyph arrays: ``x`` uint8 ``(n, size, size)``, ``y`` int64."""
    n_classes = _check_int("n_classes", n_classes, 1)
    samples_per_class = _check_int("samples_per_class", samples_per_class, 1)
    size = _check_int("size", size, 8)
    max_strokes = _check_int("max_strokes", max_strokes, 1)
    seed = _check_int("seed", seed, 0)
    if isinstance(distortion, bool) or not isinstance(distortion, (int, float)) or not 0 <= distortion <= 5:
        raise ValueError(f"distortion must be a number in [0, 5], got {distortion!r}")
    args = dict(n_classes=n_classes, samples_per_class=samples_per_class, size=size, max_strokes=max_strokes,
                distortion=float(distortion), seed=seed, version=_VERSION)
    return cached_arrays("glyphs", args, lambda: _generate(n_classes, samples_per_class, size, max_strokes,
                                                          float(distortion), seed))


def _generate(n_classes, samples_per_class, size, max_strokes, distortion, seed) -> dict:
    g = torch.Generator().manual_seed(seed)
    ctrl, mask = _characters(n_classes, max_strokes, g)
    n = n_classes * samples_per_class
    y = torch.arange(n_classes).repeat_interleave(samples_per_class)
    c = ctrl[y]  # (n, S, 3, 2)
    m = mask[y]
    # Small distortions: rotation, scale, shear, shift, control-point jitter, pen width.
    dist = float(distortion)
    angle = (torch.rand(n, generator=g) - 0.5) * 2 * math.radians(10) * dist
    scale = 1 + (torch.rand(n, 2, generator=g) - 0.5) * 0.2 * dist
    shear = (torch.rand(n, generator=g) - 0.5) * 0.3 * dist
    shift = (torch.rand(n, 2, generator=g) - 0.5) * 0.12 * dist
    cos, sin = torch.cos(angle), torch.sin(angle)
    A = torch.stack([torch.stack([cos, -sin + shear], -1), torch.stack([sin, cos], -1)], -2) * scale[:, None, :]
    c = torch.einsum("nij,nspj->nspi", A, c) + shift[:, None, None, :]
    c = c + (torch.rand(c.shape, generator=g) - 0.5) * 0.08 * dist
    width = 0.85 + (torch.rand(n, generator=g) - 0.5) * 0.5 * dist
    chunks = []
    for start in range(0, n, 4096):  # bounded memory
        sl = slice(start, start + 4096)
        chunks.append(_render(c[sl], m[sl], width[sl], size))
    x = (torch.cat(chunks) * 255).round().to(torch.uint8)
    return {"x": x.numpy(), "y": y.numpy().astype(np.int64)}


def glyphs(n_classes: int = 1000, samples_per_class: int = 20, background_classes: int | None = None,
           size: int = 28, max_strokes: int = 4, distortion: float = 1.0, seed: int = 0):
    """Procedural Omniglot-like characters, split by class into background and evaluation sets.

    ``n_classes`` random characters of 1 to ``max_strokes`` strokes, each
    drawn ``samples_per_class`` times with small random distortions, as
    ``size x size`` grey images in ``[0, 1]``. Like Omniglot's standard split,
    the first ``background_classes`` classes (default 60%) form the background
    set (for meta-training) and the rest the evaluation set: the two sets share
    no class. Class ids are global (the evaluation set's start at
    ``background_classes``).

    Args:
        n_classes: number of characters (classes), >= 2.
        samples_per_class: drawings per character (default 20, as in Omniglot).
        background_classes: classes of the background set; default ``round(0.6 * n_classes)``.
        size: image side in pixels (default 28).
        max_strokes: most strokes in a character (default 4).
        distortion: scale of the per-sample distortions (0 = identical copies; default 1).
        seed: the generator's seed; the same arguments give the same images.

    Returns:
        ``(background, evaluation)``: :class:`TensorClassificationDataset` with
        ``x`` of shape ``(n, 1, size, size)`` and global class ids ``y``.

    Example:
        >>> background, evaluation = glyphs(n_classes=200)
        >>> background.x.shape[1:], len(set(background.classes) & set(evaluation.classes))
        (torch.Size([1, 28, 28]), 0)
    """
    n_classes = _check_int("n_classes", n_classes, 2)
    if background_classes is None:
        background_classes = max(1, min(n_classes - 1, round(0.6 * n_classes)))
    background_classes = _check_int("background_classes", background_classes, 1)
    if background_classes >= n_classes:
        raise ValueError(f"background_classes must be < n_classes={n_classes}, got {background_classes}")
    data = glyph_arrays(n_classes=n_classes, samples_per_class=samples_per_class, size=size,
                        max_strokes=max_strokes, distortion=distortion, seed=seed)
    x = torch.from_numpy(data["x"]).float().div_(255).unsqueeze(1)
    y = torch.from_numpy(data["y"]).long()
    bg = y < background_classes
    return TensorClassificationDataset(x[bg], y[bg]), TensorClassificationDataset(x[~bg], y[~bg])
