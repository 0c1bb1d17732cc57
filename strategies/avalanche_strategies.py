"""Avalanche 0.6's strategies that are not plugins, by command-line name (``kta run --strategy NAME``).

Each factory receives what every strategy factory receives (``model``,
``optimizer``, ``train_epochs``, ``train_mb_size``, ``plugins``, ``seed``,
``device``, ``log_dir``, ``progress``) plus its own options, typed in its
signature and checked (errors name the option) before Avalanche sees them.

Strategies that take ``model``/``optimizer``/``criterion`` run as
``KTA<Name>(KTAStrategyMixin, <Avalanche class>)``: KTA's fast data path (every
loader the strategy builds goes through the tensor loader when the data is
tensor-backed), seeded shuffling, KTA's evaluator and the plugin meeting
points; where the Avalanche class defines a per-iteration callback itself, its
own version is kept. iCaRL and Streaming LDA build their own model from
``model.features`` / ``model.classifier`` and run on Avalanche's loaders.

The Avalanche strategies that are a plugin on ``Naive`` (EWC, SI, LwF, GEM,
A-GEM, GDumb, MAS, LFL, MIR, BiC, CoPE, GSS-greedy, Replay, RWalk...) are not
repeated here: use ``--strategy naive --plugin NAME``.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import nn

from kta_plugins.base import check_int, check_positive, check_range, check_type

from .base import KTAStrategyMixin, default_evaluator
from .registry import register_strategy

__all__ = ["kta_class", "AVALANCHE_STRATEGIES"]

_TEMPLATE_MODULES = ("avalanche.training.templates", "avalanche.core")


@functools.lru_cache(maxsize=None)
def kta_class(cls):
    """``KTA<Name>(KTAStrategyMixin, cls)``, keeping ``cls``'s own versions of the per-iteration
    callbacks (``_before_forward`` ...) that the mixin would otherwise dispatch itself."""
    own = set()
    for c in cls.__mro__:
        if c.__module__.startswith(_TEMPLATE_MODULES) or c is object:
            break
        own |= set(vars(c))
    keep = {name: getattr(cls, name) for name in own
            if name.startswith("_") and not name.startswith("__") and hasattr(KTAStrategyMixin, name)}
    return type(f"KTA{cls.__name__}", (KTAStrategyMixin, cls), {**keep, "__module__": __name__})


def _common(train_epochs, train_mb_size, plugins, seed, device, log_dir, progress):
    return dict(train_epochs=train_epochs, train_mb_size=train_mb_size, plugins=plugins, seed=seed, device=device,
                log_dir=log_dir, progress=progress)


def _fast(cls, model, optimizer, common, **options):
    return kta_class(cls)(model=model, optimizer=optimizer, **common, **options)


def _plain(cls, seed, device, train_epochs, train_mb_size, plugins, log_dir, progress, **options):
    """An Avalanche strategy that builds its own model: Avalanche's loaders, KTA's evaluator and seeding."""
    import sys

    from .base import ProgressBar

    check_int("train_epochs", train_epochs, minimum=1)
    check_int("train_mb_size", train_mb_size, minimum=1)
    plugins = list(plugins or [])
    if progress if progress is not None else sys.stderr.isatty():
        plugins.append(ProgressBar())
    sub = type(f"KTA{cls.__name__}", (cls,), {"__module__": __name__})
    s = sub(train_epochs=train_epochs, train_mb_size=train_mb_size, eval_mb_size=256, device=device, plugins=plugins,
            evaluator=default_evaluator(log_dir), **options)
    s.seed = seed
    s._data_generator = torch.Generator().manual_seed(seed)  # compare's checkpoints save it
    return s


def _head(model, who):
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear) or not isinstance(getattr(model, "features", None), nn.Module):
        raise ValueError(f"model: {who} needs a model with a `features` module and an nn.Linear `classifier` "
                         f"(every model of `kta list`), got {type(model).__name__}")
    return head


def _input_shape(model, input_shape, who):
    shape = input_shape or getattr(model, "kta_input_shape", None)
    if not shape:
        raise ValueError(f"input_shape: {who} needs the shape of one input, e.g. input_shape=[1,28,28]")
    return tuple(int(s) for s in shape)


# ---------------------------------------------------------------- replay-based
@register_strategy("er-ace")
def er_ace(model, optimizer, mem_size: int = 200, batch_size_mem: int = 10, train_epochs: int = 1,
           train_mb_size: int = 64, plugins=None, seed: int = 0, device="cpu", log_dir=None, progress=None):
    """ER-ACE (Caccia et al. 2022): replay with an asymmetric cross-entropy on the current batch's classes."""
    from avalanche.training import ER_ACE

    check_int("mem_size", mem_size, minimum=1)
    check_int("batch_size_mem", batch_size_mem, minimum=1)
    return _fast(ER_ACE, model, optimizer, _common(train_epochs, train_mb_size, plugins, seed, device, log_dir,
                                                   progress), mem_size=mem_size, batch_size_mem=batch_size_mem)


@functools.lru_cache(maxsize=None)
def _er_aml_class():
    from avalanche.training import ER_AML
    from avalanche.training.utils import cycle

    class ERAML(ER_AML):
        """Avalanche's ER_AML, whose per-class positive/negative loaders cycle forever when a class
        holds fewer memory samples than one batch (``drop_last=True`` gives an empty loader: the first
        training step never returns). Here short classes give their partial batch."""

        def _before_training_exp(self, **kwargs):
            super()._before_training_exp(**kwargs)
            if getattr(self, "pos_neg_loaders", None) is not None:
                self.pos_neg_loaders = [
                    cycle(torch.utils.data.DataLoader(group.buffer, batch_size=self.train_mb_size, shuffle=True,
                                                      drop_last=len(group.buffer) >= self.train_mb_size))
                    for group in self.storage_policy.buffer_groups.values() if len(group.buffer)
                ]

    return ERAML


@register_strategy("er-aml")
def er_aml(model, optimizer, mem_size: int = 200, batch_size_mem: int = 10, temp: float = 0.1,
           base_temp: float = 0.07, same_task_neg: bool = True, train_epochs: int = 1, train_mb_size: int = 64,
           plugins=None, seed: int = 0, device="cpu", log_dir=None, progress=None):
    """ER-AML (Caccia et al. 2022): replay with a metric-learning loss on the features of the current batch."""
    _head(model, "er-aml")
    check_int("mem_size", mem_size, minimum=1)
    check_int("batch_size_mem", batch_size_mem, minimum=1)
    check_positive("temp", temp)
    check_positive("base_temp", base_temp)
    check_type("same_task_neg", same_task_neg, bool)
    return _fast(_er_aml_class(), model, optimizer, _common(train_epochs, train_mb_size, plugins, seed, device, log_dir,
                                                   progress), feature_extractor=model.features, mem_size=mem_size,
                 batch_size_mem=batch_size_mem, temp=temp, base_temp=base_temp, same_task_neg=same_task_neg)


@register_strategy("der")
def der(model, optimizer, mem_size: int = 200, batch_size_mem: Optional[int] = None, alpha: float = 0.1,
        beta: float = 0.5, train_epochs: int = 1, train_mb_size: int = 64, plugins=None, seed: int = 0, device="cpu",
        log_dir=None, progress=None):
    """Dark Experience Replay ++ (Buzzega et al. 2020): replay logits (alpha) and labels (beta) from memory."""
    from avalanche.training import DER

    check_int("mem_size", mem_size, minimum=1)
    if batch_size_mem is not None:
        check_int("batch_size_mem", batch_size_mem, minimum=1)
    check_positive("alpha", alpha, strict=False)
    check_positive("beta", beta, strict=False)
    return _fast(DER, model, optimizer, _common(train_epochs, train_mb_size, plugins, seed, device, log_dir,
                                                progress), mem_size=mem_size, batch_size_mem=batch_size_mem,
                 alpha=alpha, beta=beta)


@register_strategy("mer")
def mer(model, optimizer, mem_size: int = 200, batch_size_mem: int = 10, n_inner_steps: int = 5, beta: float = 0.1,
        gamma: float = 0.1, train_epochs: int = 1, train_mb_size: int = 64, plugins=None, seed: int = 0,
        device="cpu", log_dir=None, progress=None):
    """Meta-Experience Replay (Riemer et al. 2019): Reptile-style meta-updates over replayed batches."""
    from avalanche.training.supervised.mer import MER

    check_int("mem_size", mem_size, minimum=1)
    check_int("batch_size_mem", batch_size_mem, minimum=1)
    check_int("n_inner_steps", n_inner_steps, minimum=1)
    check_range("beta", beta, 0, 1)
    check_range("gamma", gamma, 0, 1)
    return _fast(MER, model, optimizer, _common(train_epochs, train_mb_size, plugins, seed, device, log_dir,
                                                progress), mem_size=mem_size, batch_size_mem=batch_size_mem,
                 n_inner_steps=n_inner_steps, beta=beta, gamma=gamma)


@register_strategy("feature-replay")
def feature_replay(model, optimizer, mem_size: int = 200, batch_size_mem: int = 10, train_epochs: int = 1,
                   train_mb_size: int = 64, plugins=None, seed: int = 0, device="cpu", log_dir=None, progress=None):
    """Avalanche's FeatureReplay: replay stored features of earlier experiences through the last layer."""
    from avalanche.training.supervised.feature_replay import FeatureReplay

    _head(model, "feature-replay")
    check_int("mem_size", mem_size, minimum=1)
    check_int("batch_size_mem", batch_size_mem, minimum=1)
    return _fast(FeatureReplay, model, optimizer, _common(train_epochs, train_mb_size, plugins, seed, device,
                                                          log_dir, progress),
                 last_layer_name="classifier", mem_size=mem_size, batch_size_mem=batch_size_mem)


@register_strategy("generative-replay")
def generative_replay(model, optimizer, input_shape: Optional[list] = None, nhid: int = 16,
                      generator_epochs: Optional[int] = None, generator_lr: float = 0.001,
                      replay_size: Optional[int] = None, increasing_replay_size: bool = False,
                      train_epochs: int = 1, train_mb_size: int = 64, plugins=None, seed: int = 0, device="cpu",
                      log_dir=None, progress=None):
    """Deep Generative Replay (Shin et al. 2017): a VAE (Avalanche's MlpVAE) learns the inputs, its samples,
    labelled by the previous model, are replayed."""
    from avalanche.models.generator import MlpVAE, VAE_loss
    from avalanche.training import GenerativeReplay
    from avalanche.training.supervised.strategy_wrappers import VAETraining

    shape = _input_shape(model, input_shape, "generative-replay")
    check_int("nhid", nhid, minimum=1)
    if generator_epochs is not None:
        check_int("generator_epochs", generator_epochs, minimum=1)
    check_positive("generator_lr", generator_lr)
    if replay_size is not None:
        check_int("replay_size", replay_size, minimum=1)
    check_type("increasing_replay_size", increasing_replay_size, bool)
    vae = MlpVAE(shape, nhid=nhid, device=device)
    generator = kta_class(VAETraining)(
        model=vae, optimizer=torch.optim.Adam(vae.parameters(), lr=generator_lr), criterion=VAE_loss,
        train_mb_size=train_mb_size, train_epochs=generator_epochs or train_epochs, device=device, seed=seed,
        evaluator=_silent_evaluator(), progress=False)
    return _fast(GenerativeReplay, model, optimizer, _common(train_epochs, train_mb_size, plugins, seed, device,
                                                             log_dir, progress),
                 generator_strategy=generator, replay_size=replay_size, increasing_replay_size=increasing_replay_size)


def _silent_evaluator():
    from avalanche.training.plugins import EvaluationPlugin

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EvaluationPlugin(loggers=[])


# ---------------------------------------------------------------- architectural
@register_strategy("cwr-star")
def cwr_star(model, optimizer, train_epochs: int = 1, train_mb_size: int = 64, plugins=None, seed: int = 0,
             device="cpu", log_dir=None, progress=None):
    """CWR* (Lomonaco & Maltoni 2017): consolidated class weights of the head, the rest frozen after the first experience."""
    from avalanche.training import CWRStar

    _head(model, "cwr-star")
    return _fast(CWRStar, model, optimizer, _common(train_epochs, train_mb_size, plugins, seed, device, log_dir,
                                                    progress), cwr_layer_name="classifier")


@functools.lru_cache(maxsize=None)
def _packnet_model_class():
    from avalanche.models import MultiTaskModule
    from avalanche.models.packnet import PackNetModel

    class PackNetTaskModel(PackNetModel):
        """Avalanche's PackNetModel, passing the task labels on to a multi-head model (Avalanche calls
        ``wrappee(x)`` only, and a multi-head model without task labels answers with every head)."""

        def forward(self, input, task_id):
            task = task_id[0]
            assert task_id.eq(task).all(), "All task ids must be the same"
            self.activate_task(min(task, self.task_count))
            if isinstance(self.wrappee, MultiTaskModule):
                return self.wrappee(input, task_id)
            return self.wrappee(input)

    return PackNetTaskModel


@register_strategy("packnet")
def packnet(model, optimizer, prune_proportion: float = 0.5, post_prune_epochs: int = 1, train_epochs: int = 1,
            train_mb_size: int = 64, plugins=None, seed: int = 0, device="cpu", log_dir=None, progress=None):
    """PackNet (Mallya & Lazebnik 2018): prune after each task, retrain, freeze the kept weights (task-incremental)."""
    from avalanche.training import PackNet

    check_range("prune_proportion", prune_proportion, 0, 1, low_inclusive=False, high_inclusive=False)
    check_int("post_prune_epochs", post_prune_epochs, minimum=1)
    if train_epochs <= post_prune_epochs:
        raise ValueError(f"train_epochs: packnet trains train_epochs - post_prune_epochs epochs, prunes, then "
                         f"fine-tunes post_prune_epochs={post_prune_epochs}; give train_epochs (--epochs) > "
                         f"{post_prune_epochs}, got {train_epochs}")
    wrapped = _packnet_model_class()(model)
    opt = type(optimizer)(wrapped.parameters(), **optimizer.defaults)
    return _fast(PackNet, wrapped, opt, _common(train_epochs, train_mb_size, plugins, seed, device, log_dir,
                                                progress), prune_proportion=prune_proportion,
                 post_prune_epochs=post_prune_epochs)


# ---------------------------------------------------------------- no gradient training of the head
@register_strategy("streaming-lda")
def streaming_lda(model, optimizer, shrinkage_param: float = 1e-4, streaming_update_sigma: bool = True,
                  train_epochs: int = 1, train_mb_size: int = 64, plugins=None, seed: int = 0, device="cpu",
                  log_dir=None, progress=None):
    """Deep Streaming LDA (Hayes & Kanan 2020): a streaming linear discriminant on ``model.features``
    (kept frozen: give a pretrained model for useful features); ``optimizer`` is unused."""
    from avalanche.training import StreamingLDA

    head = _head(model, "streaming-lda")
    check_positive("shrinkage_param", shrinkage_param)
    check_type("streaming_update_sigma", streaming_update_sigma, bool)
    return _plain(StreamingLDA, seed, device, train_epochs, train_mb_size, plugins, log_dir, progress,
                  slda_model=model.features, criterion=nn.CrossEntropyLoss(), input_size=head.in_features,
                  num_classes=head.out_features, shrinkage_param=shrinkage_param,
                  streaming_update_sigma=streaming_update_sigma)


#: KTA name -> Avalanche class of the strategies registered here.
AVALANCHE_STRATEGIES = {
    "er-ace": "ER_ACE", "er-aml": "ER_AML", "der": "DER", "mer": "MER", "feature-replay": "FeatureReplay",
    "generative-replay": "GenerativeReplay", "cwr-star": "CWRStar", "packnet": "PackNet",
    "streaming-lda": "StreamingLDA",
}
