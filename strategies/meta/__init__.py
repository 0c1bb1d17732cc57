"""Few-shot and meta-learning strategies (learn2learn-backed Avalanche strategies).

Every strategy here is an :class:`~strategies.meta.base.EpisodicStrategy`
(Avalanche's ``SupervisedMetaLearningTemplate``): it meta-trains on N-way
K-shot Q-query episodes drawn from each training experience and evaluates on
episodes of each evaluated experience (mean accuracy and 95% CI in
``strategy.episode_results``).

========== ===================================== =========================================
name       class                                 paper
========== ===================================== =========================================
maml       :class:`~.maml.MAML`                  Finn et al. 2017
fomaml     :class:`~.maml.FOMAML`                Finn et al. 2017 (first order)
metasgd    :class:`~.metasgd.MetaSGD`            Li et al. 2017
anil       :class:`~.anil.ANIL`                  Raghu et al. 2020
protonet   :class:`~.protonet.ProtoNet`          Snell et al. 2017
matchingnet :class:`~.matchingnet.MatchingNet`   Vinyals et al. 2016
relationnet :class:`~.relationnet.RelationNet`   Sung et al. 2018
siamese    :class:`~.siamese.Siamese`            Koch et al. 2015
========== ===================================== =========================================

:func:`run_few_shot` runs the standard protocol on a named few-shot scenario.
"""
from __future__ import annotations

import time
from typing import Optional

from . import _l2l
from .anil import ANIL
from .backbones import Conv4, default_backbone
from .base import EpisodicStrategy, mean_ci95
from .maml import FOMAML, MAML
from .matchingnet import MatchingNet
from .metasgd import MetaSGD
from .protonet import ProtoNet
from .relationnet import RelationNet
from .siamese import Siamese

__all__ = [
    "ANIL", "Conv4", "EpisodicStrategy", "FOMAML", "MAML", "MatchingNet", "MetaSGD", "ProtoNet", "RelationNet",
    "Siamese", "default_backbone", "mean_ci95", "run_few_shot", "METHODS", "method_settings",
]

METHODS = ("maml", "fomaml", "metasgd", "anil", "protonet", "matchingnet", "relationnet", "siamese")

if not _l2l.available():  # `kta list` says how to get them
    from strategies.registry import STRATEGIES as _STRATEGIES

    for _name in METHODS:
        _STRATEGIES.register(_name, _STRATEGIES.get(_name), help=f"{_STRATEGIES.help(_name)} [needs learn2learn: pip install -e '.[meta]']")

# Hyper-parameters of run_few_shot (Adam, lr 1e-3 for every method).
_SETTINGS = {
    "maml": dict(inner_lr=0.4, adaptation_steps=1, test_adaptation_steps=3, meta_batch_size=4),
    "fomaml": dict(inner_lr=0.4, adaptation_steps=1, test_adaptation_steps=3, meta_batch_size=4),
    "metasgd": dict(inner_lr=0.4, adaptation_steps=1, test_adaptation_steps=1, meta_batch_size=4),
    "anil": dict(inner_lr=0.1, adaptation_steps=5, meta_batch_size=4),
    "protonet": dict(meta_batch_size=1),
    "matchingnet": dict(meta_batch_size=1, scale=10.0),
    "relationnet": dict(meta_batch_size=1, hidden=64),
    "siamese": dict(meta_batch_size=1, pairs_per_episode=64),
}
# Meta-batches of training (full run, --quick run); MAML-style methods see 4 tasks per meta-batch.
_ITERATIONS = {"full": {"maml": 250, "fomaml": 250, "metasgd": 250, "anil": 250}, "quick": {}}
_DEFAULT_ITERATIONS = {"full": 600, "quick": 40}
# Per-scenario recipes, over the method's settings. MAML on MNIST-1D: one inner step of 0.4
# (the glyph recipe) gave 30.0% (reference 38.7); smaller, more numerous inner steps (0.1 x 5 in
# training, x 10 at test) and 1,000 meta-batches give 47.6% over 3 seeds (the scan is in README.md).
_SCENARIO_SETTINGS = {
    ("mnist1d-4way-1shot", "maml"): dict(inner_lr=0.1, adaptation_steps=5, test_adaptation_steps=10,
                                         iterations_per_epoch=1000),
}


def method_settings(strategy_name: str, quick: bool = False, scenario_name: Optional[str] = None) -> dict:
    """The hyper-parameters :func:`run_few_shot` uses for ``strategy_name`` (on ``scenario_name``, if given:
    some scenarios have their own recipe)."""
    if strategy_name not in _SETTINGS:
        raise ValueError(f"strategy_name must be one of {list(METHODS)}, got {strategy_name!r}")
    mode = "quick" if quick else "full"
    settings = {**_SETTINGS[strategy_name],
                "iterations_per_epoch": _ITERATIONS[mode].get(strategy_name, _DEFAULT_ITERATIONS[mode])}
    key = (str(scenario_name).split(":")[0], strategy_name)  # "name:option=value" has name's recipe
    settings.update(_SCENARIO_SETTINGS.get(key, {}))
    if quick:
        if key in _SCENARIO_SETTINGS:
            settings["iterations_per_epoch"] = _ITERATIONS["quick"].get(strategy_name, _DEFAULT_ITERATIONS["quick"])
        if settings.get("meta_batch_size", 1) > 1:
            settings["iterations_per_epoch"] = max(10, settings["iterations_per_epoch"] // 4)
    return {**settings, "lr": 1e-3}


def run_few_shot(scenario_name: str, strategy_name: str, seed: int = 0, quick: bool = False,
                 **overrides) -> dict:
    """Meta-train ``strategy_name`` on ``scenario_name``'s meta-training classes, test on unseen classes.

    The standard protocol: after meta-training (over every experience of the
    train stream in turn), the mean accuracy on ``eval_episodes`` N-way K-shot
    episodes of the unseen classes with its 95% confidence interval (600
    episodes; 200 with ``quick``, which also trains far less). The model is
    :func:`default_backbone` (Conv-4 for images, KTA's CNN1d for MNIST-1D),
    the optimizer Adam (lr 1e-3), the hyper-parameters :func:`method_settings` (for this scenario).

    Returns a dict: ``scenario``, ``strategy``, ``seed``, ``quick``, ``n_ways``,
    ``k_shots``, ``q_queries``, ``accuracy`` and ``ci95`` (fractions, unseen
    classes), ``episodes``, ``seen`` (per seen experience: accuracy and ci95),
    ``iterations`` (meta-batches per experience), ``settings``, ``seconds``.

    ``overrides`` replace settings (e.g. ``inner_lr=0.4, iterations_per_epoch=250``; ``lr`` is Adam's).

    Example:
        >>> r = run_few_shot("glyphs-5way-5shot", "protonet", seed=0, quick=True)
        >>> print(f"{100 * r['accuracy']:.1f} +- {100 * r['ci95']:.1f}")
    """
    import random

    import numpy as np
    import torch

    from scenarios.registry import SCENARIOS, load_all
    from strategies.registry import STRATEGIES

    load_all()
    settings = {**method_settings(strategy_name, quick, scenario_name), **overrides}
    t0 = time.perf_counter()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    bm = SCENARIOS.build(scenario_name, seed=seed)
    if getattr(bm, "kind", None) != "few-shot":
        raise ValueError(f"scenario_name: {scenario_name!r} is not a few-shot scenario (build it with "
                         "scenarios.episodes.few_shot_benchmark)")
    net = default_backbone(bm.input_shape, bm.n_ways)
    kwargs = {k: v for k, v in settings.items() if k != "lr"}
    opt = torch.optim.Adam(net.parameters(), lr=settings["lr"])
    strategy = STRATEGIES.get(strategy_name)(
        model=net, optimizer=opt, seed=seed, progress=False, eval_episodes=100 if quick else 600, **kwargs)
    for exp in bm.train_stream:
        strategy.train(exp)
    unseen = strategy.evaluate_episodes(bm.test_stream[bm.unseen_index])
    seen = []
    if bm.unseen_index > 0 and not quick:
        for i in range(bm.unseen_index):
            r = strategy.evaluate_episodes(bm.test_stream[i], n_episodes=200)
            seen.append({"accuracy": r["accuracy"], "ci95": r["ci95"], "episodes": r["episodes"]})
    return {
        "scenario": scenario_name, "strategy": strategy_name, "seed": seed, "quick": quick,
        "n_ways": unseen["n_ways"], "k_shots": unseen["k_shots"], "q_queries": unseen["q_queries"],
        "accuracy": unseen["accuracy"], "ci95": unseen["ci95"], "episodes": unseen["episodes"],
        "seen": seen, "iterations": settings["iterations_per_epoch"], "settings": settings,
        "seconds": time.perf_counter() - t0,
    }
