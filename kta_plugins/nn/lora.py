"""LoRA and bottleneck-adapter layers for ``nn.Linear`` and ``nn.Conv2d`` (LoRA also ``nn.Conv1d``),
and their injection by name."""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear", "LoRAConv2d", "LoRAConv1d", "AdapterLinear", "AdapterConv2d", "inject", "merge_lora", "unmerge_lora",
           "LORA_LAYERS", "ADAPTER_LAYERS"]


def _check_rank(rank):
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")


class _LoRABase(nn.Module):
    def __init__(self, base, rank: int, alpha: float):
        super().__init__()
        _check_rank(rank)
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        self.base = base
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        self.merged = False
        self._unmerged_weight = None  # the base weight before merge(), restored by unmerge()
        for p in self.base.parameters():
            p.requires_grad_(False)

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def merge(self):
        """Fold ``scaling * B A`` into the base weight (inference without the extra matmuls)."""
        if not self.merged:
            self._unmerged_weight = self.base.weight.detach().clone()
            self.base.weight.add_(self.delta_weight().to(self.base.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        """Undo :meth:`merge`: the base weight gets back its exact pre-merge values (bit for bit;
        without a pre-merge copy, e.g. after loading merged weights, the update is subtracted)."""
        if self.merged:
            saved = getattr(self, "_unmerged_weight", None)
            if saved is not None and saved.shape == self.base.weight.shape:
                self.base.weight.copy_(saved)
            else:
                self.base.weight.sub_(self.delta_weight().to(self.base.weight.dtype))
            self._unmerged_weight = None
            self.merged = False

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


class LoRALinear(_LoRABase):
    """``y = W x + b + (alpha / r) * B A x`` (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large
    Language Models").

    ``W`` (``L x N``) and ``b`` come from the wrapped ``nn.Linear`` and are frozen;
    ``A`` (``r x N``, Kaiming-uniform) and ``B`` (``L x r``, zeros, so the layer
    starts equal to the base) train: ``r (N + L)`` parameters.

    Args:
        base: the ``nn.Linear`` to adapt.
        rank: ``r`` (default 4).
        alpha: scaling numerator (default 8.0): the update is ``alpha / r * B A``.

    Example:
        >>> layer = LoRALinear(nn.Linear(64, 10), rank=4)
        >>> layer.merge(); y = layer(x); layer.unmerge()
    """

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float = 8.0):
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        super().__init__(base, rank, alpha)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_weight(self):
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x):
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)


class LoRAConv2d(_LoRABase):
    """LoRA for ``nn.Conv2d``: ``y = conv(x; W) + (alpha / r) * conv1x1(conv(x; A); B)``.

    ``A`` is a convolution with the base's kernel, stride, padding and
    dilation from ``C_in`` to ``r`` channels; ``B`` a 1x1 convolution from ``r``
    to ``C_out`` channels (zero-initialised). The update equals a weight delta
    ``dW[o, i, h, w] = alpha / r * sum_k B[o, k] A[k, i, h, w]``, so it merges into
    ``W``. Grouped convolutions are not supported.

    Args:
        base: the ``nn.Conv2d`` to adapt (``groups=1``).
        rank: ``r`` (default 4).
        alpha: scaling numerator (default 8.0).
    """

    def __init__(self, base: nn.Conv2d, rank: int = 4, alpha: float = 8.0):
        if not isinstance(base, nn.Conv2d):
            raise TypeError(f"base must be an nn.Conv2d, got {type(base).__name__}")
        if base.groups != 1:
            raise ValueError(f"LoRAConv2d supports groups=1 convolutions only, got groups={base.groups}")
        if base.padding_mode != "zeros":
            raise ValueError(f"LoRAConv2d supports padding_mode='zeros' only, got {base.padding_mode!r}")
        super().__init__(base, rank, alpha)
        kh, kw = base.kernel_size
        dev = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_channels, kh, kw, device=dev))
        self.lora_B = nn.Parameter(torch.zeros(base.out_channels, rank, 1, 1, device=dev))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_weight(self):
        return self.scaling * torch.einsum("ok,kihw->oihw", self.lora_B[:, :, 0, 0], self.lora_A)

    def forward(self, x):
        y = self.base(x)
        if self.merged:
            return y
        b = self.base
        h = F.conv2d(x, self.lora_A, None, b.stride, b.padding, b.dilation)
        return y + self.scaling * F.conv2d(h, self.lora_B)


class LoRAConv1d(_LoRABase):
    """LoRA for ``nn.Conv1d`` (as :class:`LoRAConv2d`, one spatial dimension):
    ``y = conv(x; W) + (alpha / r) * conv1x1(conv(x; A); B)``, ``r (C_in k + C_out)`` parameters.

    Args:
        base: the ``nn.Conv1d`` to adapt (``groups=1``).
        rank: ``r`` (default 4).
        alpha: scaling numerator (default 8.0).
    """

    def __init__(self, base: nn.Conv1d, rank: int = 4, alpha: float = 8.0):
        if not isinstance(base, nn.Conv1d):
            raise TypeError(f"base must be an nn.Conv1d, got {type(base).__name__}")
        if base.groups != 1 or base.padding_mode != "zeros":
            raise ValueError("LoRAConv1d supports groups=1, padding_mode='zeros' convolutions only")
        super().__init__(base, rank, alpha)
        dev = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_channels, base.kernel_size[0], device=dev))
        self.lora_B = nn.Parameter(torch.zeros(base.out_channels, rank, 1, device=dev))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_weight(self):
        return self.scaling * torch.einsum("ok,kil->oil", self.lora_B[:, :, 0], self.lora_A)

    def forward(self, x):
        y = self.base(x)
        if self.merged:
            return y
        b = self.base
        h = F.conv1d(x, self.lora_A, None, b.stride, b.padding, b.dilation)
        return y + self.scaling * F.conv1d(h, self.lora_B)


class _Adapter(nn.Module):
    """``h = base(x); y = h + up(relu(down(h)))`` with the base frozen and ``up`` zero-initialised,
    so the adapted layer starts equal to the base. Subclasses name the base type and the
    bottleneck layers."""

    base_type: type = nn.Module

    def __init__(self, base: nn.Module, bottleneck: int = 8):
        super().__init__()
        if not isinstance(base, self.base_type):
            raise TypeError(f"base must be an nn.{self.base_type.__name__}, got {type(base).__name__}")
        _check_bottleneck(bottleneck)
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.down, self.up = self._bottleneck_layers(base, bottleneck)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def _bottleneck_layers(self, base, bottleneck):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x):
        h = self.base(x)
        return h + self.up(F.relu(self.down(h)))


class AdapterLinear(_Adapter):
    """Bottleneck adapter after an ``nn.Linear`` (Houlsby et al. 2019, "Parameter-efficient
    transfer learning for NLP"): ``h = base(x); y = h + W_up act(W_down h)``.

    ``W_up`` starts at zero, so the adapted layer starts equal to the base. The
    base is frozen. Adapters are non-linear: they cannot be merged.

    Args:
        base: the ``nn.Linear`` to adapt.
        bottleneck: width of the bottleneck (default 8).
    """

    base_type = nn.Linear

    def _bottleneck_layers(self, base, bottleneck):
        d, dev = base.out_features, base.weight.device
        return nn.Linear(d, bottleneck, device=dev), nn.Linear(bottleneck, d, device=dev)


class AdapterConv2d(_Adapter):
    """Bottleneck adapter after an ``nn.Conv2d`` with 1x1 convolutions (Rebuffi et al. 2017,
    residual adapters): ``h = base(x); y = h + up(relu(down(h)))``, ``up`` zero-initialised.

    Args:
        base: the ``nn.Conv2d`` to adapt.
        bottleneck: channels of the bottleneck (default 8).
    """

    base_type = nn.Conv2d

    def _bottleneck_layers(self, base, bottleneck):
        c, dev = base.out_channels, base.weight.device
        return nn.Conv2d(c, bottleneck, 1, device=dev), nn.Conv2d(bottleneck, c, 1, device=dev)


def _check_bottleneck(bottleneck):
    if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 1:
        raise ValueError(f"bottleneck must be a positive integer, got {bottleneck!r}")


LORA_LAYERS = {nn.Linear: LoRALinear, nn.Conv2d: LoRAConv2d, nn.Conv1d: LoRAConv1d}
ADAPTER_LAYERS = {nn.Linear: AdapterLinear, nn.Conv2d: AdapterConv2d}


def inject(model: nn.Module, patterns: Union[str, Sequence[str]], kind: str = "lora", argument: str = "patterns",
           **layer_args) -> list[str]:
    """Replace the ``nn.Linear`` / ``nn.Conv2d`` submodules matched by ``patterns`` (names or globs)
    with LoRA (``kind="lora"``) or adapter (``kind="adapter"``) wrappers, in place.

    A pattern that names a module matches that module itself (not its children);
    a glob matches every module whose name it matches, and unsupported module
    types among glob matches are skipped. A pattern that matches no supported
    layer, or an exact name of an unsupported type, is a ``ValueError`` naming
    ``argument``. Returns the names of the wrapped modules.
    """
    import fnmatch

    table = {"lora": LORA_LAYERS, "adapter": ADAPTER_LAYERS}
    if kind not in table:
        raise ValueError(f"kind must be one of {sorted(table)}, got {kind!r}")
    layers = table[kind]
    if isinstance(patterns, str):
        patterns = [patterns]
    modules = dict(model.named_modules())
    wrapped_types = tuple(LORA_LAYERS.values()) + tuple(ADAPTER_LAYERS.values())
    kinds = ", ".join(t.__name__ for t in layers)
    chosen: list[str] = []
    for pat in patterns:
        is_glob = any(c in pat for c in "*?[")
        if is_glob:
            hits = [n for n, m in modules.items() if n and fnmatch.fnmatchcase(n, pat)
                    and type(m) in layers and not n.endswith(".base")]
            if not hits:
                raise ValueError(f"{argument}: pattern {pat!r} matches no {kinds} of "
                                 f"{type(model).__name__}; modules: {[n for n in modules if n][:20]}")
        else:
            if pat not in modules or not pat:
                raise ValueError(f"{argument}: {pat!r} is not a module of {type(model).__name__}; "
                                 f"modules: {[n for n in modules if n][:20]}")
            if isinstance(modules[pat], wrapped_types):
                continue
            if type(modules[pat]) not in layers:
                raise TypeError(f"{argument}: module {pat!r} is a {type(modules[pat]).__name__}; {kind} supports "
                                f"{', '.join(t.__name__ for t in layers)} only")
            hits = [pat]
        chosen += [h for h in hits if h not in chosen]
    for name in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, layers[type(modules[name])](modules[name], **layer_args))
    return chosen


def merge_lora(model: nn.Module) -> None:
    """Merge every LoRA layer of ``model`` into its base weight."""
    for m in model.modules():
        if isinstance(m, _LoRABase):
            m.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo :func:`merge_lora`."""
    for m in model.modules():
        if isinstance(m, _LoRABase):
            m.unmerge()
