"""LoRA and bottleneck adapters as plugins: inject by module-name pattern, train only the adapters."""
from __future__ import annotations

from typing import Sequence

from kta_plugins.base import KTAPlugin, check_int, check_positive, check_type, match_parameters, register_plugin
from kta_plugins.nn.lora import inject, merge_lora, unmerge_lora
from kta_plugins.transfer.freeze import clear_frozen_grads, set_frozen_bn_eval, name_patterns as _patterns

__all__ = ["LoRA", "Adapter"]


class _Injector(KTAPlugin):
    kind = "lora"
    #: one layer-rewriting plugin per strategy (kta_plugins.compose.check_roles)
    exclusive_role = "layer-surgery"
    roles = ("renames-parameters",)
    #: it rewrites layers before the first step: other plugins' terms legitimately change (new
    #: parameters, new names), so check_composition does not compare them with their solo values
    modifies_model = True
    state_attrs = ("injected",)

    def __init__(self, patterns, train):
        super().__init__()
        self.patterns = _patterns("patterns", patterns)
        self.train = _patterns("train", train, allow_empty=True)
        self.injected: list[str] = []
        self._frozen: list[str] = []

    def _layer_args(self) -> dict:
        raise NotImplementedError

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        # Runs before Avalanche's make_optimizer: new adapter parameters join the optimizer.
        if not self.injected:
            self.injected = inject(strategy.model, self.patterns, kind=self.kind, **self._layer_args())
        else:
            # Already chosen (earlier experience, or a plugin restored with load_state_dict onto a
            # fresh model): wrap the recorded layers that are not wrapped yet, so the model has the
            # adapted architecture again and a saved model state_dict loads into it.
            inject(strategy.model, self.injected, kind=self.kind, argument="injected", **self._layer_args())
        strategy.model.to(strategy.device)

    def before_training_exp(self, strategy, **kwargs):
        model = strategy.model
        if not self.injected:
            raise RuntimeError(f"{type(self).__name__}: no layer was injected before training")
        trainable = set(match_parameters(model, self.train, argument="train")) if self.train else set()
        self._frozen = []
        for n, p in model.named_parameters():
            own = ".lora_" in n or ".down." in n or ".up." in n
            own = own and any(n.startswith(i + ".") for i in self.injected)
            if own or n in trainable:
                p.requires_grad_(True)
            else:
                p.requires_grad_(False)
                p.grad = None
                strategy.optimizer.state.pop(p, None)
                self._frozen.append(n)

    def before_training_epoch(self, strategy, **kwargs):
        set_frozen_bn_eval(strategy.model)

    def before_update(self, strategy, **kwargs):
        clear_frozen_grads(strategy.model, self._frozen)


@register_plugin("lora", help="LoRA (Hu et al. 2021) on matched Linear/Conv2d layers; only adapters train")
class LoRA(_Injector):
    """Low-rank adaptation (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

    The ``nn.Linear`` / ``nn.Conv2d`` modules matched by ``patterns`` are
    replaced (before the first experience's optimizer is built) by
    :class:`kta_plugins.nn.lora.LoRALinear` / ``LoRAConv2d``:

        y = W x + b + (alpha / r) * B A x,    A: r x N,  B: L x r (zero-initialised)

    Only ``A``, ``B`` (``r (N + L)`` parameters per linear layer) and the
    parameters matched by ``train`` (e.g. a new head) are trained; every other
    parameter is frozen and stays bit-for-bit unchanged. With
    ``merge_for_eval=True`` the updates are folded into ``W`` during evaluation
    and unfolded afterwards.

    Args:
        patterns: module names / globs to adapt (e.g. ``["features.*"]``).
        rank: ``r`` (default 4).
        alpha: scaling numerator (default 8.0).
        train: names / globs of other parameters to keep trainable (default
            ``["classifier"]``; ``[]`` for none).
        merge_for_eval: merge the LoRA updates while evaluating (default False).

    Example:
        >>> lora = LoRA(patterns=["features.*"], rank=4, train=["classifier"])
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[lora])
        >>> strategy.train(target_experience)
    """

    kind = "lora"

    def __init__(self, patterns: Sequence[str] = ("*",), rank: int = 4, alpha: float = 8.0,
                 train: Sequence[str] = ("classifier",), merge_for_eval: bool = False):
        super().__init__(patterns, train)
        self.rank = check_int("rank", rank, minimum=1)
        self.alpha = check_positive("alpha", alpha)
        self.merge_for_eval = check_type("merge_for_eval", merge_for_eval, bool)

    def _layer_args(self):
        return {"rank": self.rank, "alpha": self.alpha}

    def before_eval_exp(self, strategy, **kwargs):
        if self.merge_for_eval:
            merge_lora(strategy.model)

    def after_eval_exp(self, strategy, **kwargs):
        if self.merge_for_eval:
            unmerge_lora(strategy.model)


@register_plugin("adapter", help="bottleneck adapters (Houlsby et al. 2019) on matched Linear/Conv2d layers")
class Adapter(_Injector):
    """Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP";
    Rebuffi et al. 2017 for convolutions).

    After each ``nn.Linear`` / ``nn.Conv2d`` matched by ``patterns``:
    ``y = h + W_up relu(W_down h)`` with ``h`` the frozen layer's output and
    ``W_up`` zero-initialised (the network starts unchanged). Only the adapters
    and the ``train`` parameters are trained.

    Args:
        patterns: module names / globs to adapt.
        bottleneck: bottleneck width (default 8).
        train: other parameters kept trainable (default ``["classifier"]``).

    Example:
        >>> strategy = Naive(model=model, optimizer=opt, plugins=[Adapter(patterns=["features.1"])])
    """

    kind = "adapter"

    def __init__(self, patterns: Sequence[str] = ("*",), bottleneck: int = 8,
                 train: Sequence[str] = ("classifier",)):
        super().__init__(patterns, train)
        self.bottleneck = check_int("bottleneck", bottleneck, minimum=1)

    def _layer_args(self):
        return {"bottleneck": self.bottleneck}
