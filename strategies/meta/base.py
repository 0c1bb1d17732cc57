"""The episodic meta-learning template shared by KTA's few-shot strategies.

:class:`EpisodicStrategy` is Avalanche's ``SupervisedMetaLearningTemplate``
(inner updates, then an outer update, per meta-batch) with KTA's defaults
(evaluator, seeding, progress bar, fast plugin dispatch). What it adds:

* **Episodes from any experience.** Training turns the experience's data into
  N-way K-shot Q-query tasks with :class:`scenarios.episodes.EpisodeSampler`
  (learn2learn underneath): each epoch is ``iterations_per_epoch`` meta-batches
  of ``meta_batch_size`` tasks. The episode shape comes from the arguments, or
  from a few-shot stream built by :func:`scenarios.episodes.few_shot_benchmark`.
* **Episodic evaluation.** ``strategy.eval(stream)`` draws ``eval_episodes``
  episodes from each experience (seeded: the same episodes every time), adapts
  to each support set, and feeds the query predictions to Avalanche's metrics
  (so ``Top1_Acc_Exp`` is the mean episode accuracy). The mean and 95%
  confidence interval (``1.96 * std / sqrt(n)``) of the episode accuracies are
  kept in ``strategy.episode_results[experience_id]``.

A subclass implements three methods:

* ``adapt(support_x, support_y)`` -> a task state (a fast-adapted learner,
  prototypes, the support embeddings ...);
* ``predict(state, query_x)`` -> scores ``(n_query, n_ways)`` (argmax = prediction);
* ``task_loss(state, query_x, query_y)`` -> the outer (meta) loss of one task
  (default: cross-entropy of ``predict``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from avalanche.training.templates import SupervisedMetaLearningTemplate
from torch import nn
from torch.nn import functional as F

from kta_plugins.base import check_int, check_type
from scenarios.episodes import EpisodeSampler, episode_spec
from strategies.base import KTAStrategyMixin

__all__ = ["EpisodicStrategy", "mean_ci95", "embedding_of", "command_line_signature"]


def mean_ci95(accuracies) -> tuple[float, float]:
    """Mean and half-width of the normal 95% confidence interval, ``1.96 * std / sqrt(n)``."""
    a = torch.as_tensor(accuracies, dtype=torch.float64)
    if a.numel() == 0:
        raise ValueError("no accuracies")
    if a.numel() == 1:
        return float(a.mean()), float("nan")
    return float(a.mean()), float(1.96 * a.std(unbiased=True) / math.sqrt(a.numel()))


def embedding_of(model: nn.Module, features: Optional[str]) -> nn.Module:
    """The embedding network: ``model``'s submodule ``features`` ("auto": ``model.features`` if it exists)."""
    if features is None:
        return model
    if features == "auto":
        sub = getattr(model, "features", None)
        return sub if isinstance(sub, nn.Module) else model
    mods = dict(model.named_modules())
    if features not in mods:
        raise ValueError(f"features: {features!r} is not a submodule of {type(model).__name__}; "
                         f"submodules: {[n for n in mods if n][:20]}")
    return mods[features]


class EpisodicStrategy(KTAStrategyMixin, SupervisedMetaLearningTemplate):
    """Episodic meta-learning on Avalanche's ``SupervisedMetaLearningTemplate`` (see the module docstring).

    Args (besides :class:`strategies.base.KTAStrategyMixin`'s ``model``, ``optimizer``, ``train_epochs``,
    ``seed``, ``device``, ``plugins``, ``evaluator``, ``progress``; ``train_mb_size`` is not used):
        n_ways, k_shots, q_queries: episode shape; ``None`` = the stream's (or 5, 1, 15).
        meta_batch_size: tasks per outer update (default 1).
        iterations_per_epoch: meta-batches per training epoch (default 100).
        eval_episodes: episodes per evaluated experience (default 600, the standard protocol).
        eval_k_shots: shots at evaluation; ``None`` = ``k_shots``.
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, n_ways: Optional[int] = None,
                 k_shots: Optional[int] = None, q_queries: Optional[int] = None, meta_batch_size: int = 1,
                 iterations_per_epoch: int = 100, eval_episodes: int = 600, eval_k_shots: Optional[int] = None,
                 **kwargs):
        from ._l2l import require

        require()  # learn2learn is optional (the `meta` extra): say how to install it, before anything else
        for name, value in (("n_ways", n_ways), ("k_shots", k_shots), ("q_queries", q_queries),
                            ("eval_k_shots", eval_k_shots)):
            if value is not None:
                check_int(name, value, 2 if name == "n_ways" else 1)
        self.n_ways, self.k_shots, self.q_queries, self.eval_k_shots = n_ways, k_shots, q_queries, eval_k_shots
        self.meta_batch_size = check_int("meta_batch_size", meta_batch_size, 1)
        self.iterations_per_epoch = check_int("iterations_per_epoch", iterations_per_epoch, 1)
        self.eval_episodes = check_int("eval_episodes", eval_episodes, 1)
        check_type("model", model, nn.Module)
        #: ``{experience id: {"accuracy", "ci95", "episodes", "n_ways", "k_shots", "q_queries"}}`` of the last eval.
        self.episode_results: dict[int, dict] = {}
        self._train_output = None
        super().__init__(model=model, optimizer=optimizer, **kwargs)

    # ------------------------------------------------------------ what subclasses implement
    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor):
        raise NotImplementedError

    def predict(self, state, query_x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def task_loss(self, state, query_x: torch.Tensor, query_y: torch.Tensor):
        """Outer loss of one task and its query scores."""
        scores = self.predict(state, query_x)
        return F.cross_entropy(scores, query_y), scores

    def eval_adapt(self, support_x, support_y):
        """Adaptation at evaluation time (default: :meth:`adapt`); runs with gradients enabled."""
        return self.adapt(support_x, support_y)

    # ------------------------------------------------------------ episodes
    def episode_shape(self, experience, evaluation: bool = False) -> tuple[int, int, int]:
        spec = episode_spec(experience) or {}
        n = self.n_ways or spec.get("n_ways", 5)
        k = self.k_shots or spec.get("k_shots", 1)
        if evaluation and self.eval_k_shots:
            k = self.eval_k_shots
        q = self.q_queries or spec.get("q_queries", 15)
        return n, k, q

    def _sampler(self, evaluation: bool) -> EpisodeSampler:
        n, k, q = self.episode_shape(self.experience, evaluation)
        exp_id = int(getattr(self.experience, "current_experience", 0))
        seed = (self.seed * 1000 + exp_id) * 2 + int(evaluation)
        try:
            return EpisodeSampler(self.adapted_dataset, n, k, q, seed=seed)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}: experience {exp_id}: {e}") from None

    def make_train_dataloader(self, **kwargs):
        self.dataloader = self._sampler(False).loader(self.iterations_per_epoch, self.meta_batch_size)

    def make_eval_dataloader(self, **kwargs):
        self.dataloader = self._sampler(True).loader(self.eval_episodes, 1)

    @property
    def support_x(self):
        return self.mbatch[2]

    @property
    def support_y(self):
        return self.mbatch[3]

    # ------------------------------------------------------------ plugin dispatch of the meta-learning events
    def _meta_hooks(self, event: str):
        """Bound hooks of the plugins that really implement ``event`` (cached per plugin list).

        Avalanche's ``trigger_plugins`` sends the four meta-learning events to every
        plugin, and its ``EvaluationPlugin`` answers each of them by visiting every
        metric; here plugins (and evaluators whose metrics and loggers) that do
        nothing on ``event`` are skipped. Order and arguments are unchanged.
        """
        from avalanche.core import SupervisedPlugin

        from strategies.base import LeanEvaluationPlugin

        cache = self.__dict__.setdefault("_kta_meta_hooks", {})
        key = (event, tuple(map(id, self.plugins)))
        if key not in cache:
            hooks = []
            for p in self.plugins:
                if not hasattr(p, event):
                    continue
                fn = getattr(type(p), event, None)
                if fn is not None and fn is getattr(SupervisedPlugin, event, None):
                    continue
                if isinstance(p, LeanEvaluationPlugin) and not p._needed(event):
                    continue
                hooks.append(getattr(p, event))
            if len(cache) > 64:
                cache.clear()
            cache[key] = hooks
        return cache[key]

    def _before_inner_updates(self, **kwargs):
        for hook in self._meta_hooks("before_inner_updates"):
            hook(self, **kwargs)

    def _after_inner_updates(self, **kwargs):
        for hook in self._meta_hooks("after_inner_updates"):
            hook(self, **kwargs)

    def _before_outer_update(self, **kwargs):
        for hook in self._meta_hooks("before_outer_update"):
            hook(self, **kwargs)

    def _after_outer_update(self, **kwargs):
        for hook in self._meta_hooks("after_outer_update"):
            hook(self, **kwargs)

    # ------------------------------------------------------------ the meta-learning template's steps
    def _inner_updates(self, **kwargs):
        sx, sy = self.support_x, self.support_y
        self._states = [self.adapt(sx[i], sy[i]) for i in range(len(sx))]

    def _outer_update(self, **kwargs):
        B = len(self._states)
        qx = self.mb_x.view(B, -1, *self.mb_x.shape[1:])
        qy = self.mb_y.view(B, -1)
        losses, scores = [], []
        for i, state in enumerate(self._states):
            loss, s = self.task_loss(state, qx[i], qy[i])
            losses.append(loss)
            scores.append(s)
        self._states = None
        self.loss = self.loss + torch.stack(losses).mean()
        self._train_output = torch.cat(scores).detach()
        self._before_backward(**kwargs)
        self.backward()
        self._after_backward(**kwargs)
        self._before_update(**kwargs)
        self.optimizer_step()
        self._after_update(**kwargs)

    def forward(self):
        # MetaUpdate calls forward() after the outer update, for the metrics: give it the
        # query scores computed during the update instead of running the model again.
        if self.is_training and self._train_output is not None:
            out, self._train_output = self._train_output, None
            return out
        raise RuntimeError(f"{type(self).__name__}.forward: predictions come from episodes (adapt + predict)")

    def eval_epoch(self, **kwargs):
        accs = []
        for self.mbatch in self.dataloader:
            self._unpack_minibatch()
            self._before_eval_iteration(**kwargs)
            self._before_eval_forward(**kwargs)
            with torch.enable_grad():
                state = self.eval_adapt(self.support_x[0], self.support_y[0])
            with torch.no_grad():
                self.mb_output = self.predict(state, self.mb_x)
            self._after_eval_forward(**kwargs)
            self.loss = F.cross_entropy(self.mb_output, self.mb_y)
            accs.append(float((self.mb_output.argmax(1) == self.mb_y).float().mean()))
            self._after_eval_iteration(**kwargs)
        n, k, q = self.episode_shape(self.experience, True)
        mean, ci = mean_ci95(accs)
        self.episode_results[int(self.experience.current_experience)] = {
            "accuracy": mean, "ci95": ci, "episodes": len(accs), "n_ways": n, "k_shots": k, "q_queries": q,
        }

    def evaluate_episodes(self, experience, n_episodes: Optional[int] = None) -> dict:
        """Evaluate on ``n_episodes`` (default ``eval_episodes``) episodes of ``experience``.

        Returns ``{"accuracy", "ci95", "episodes", "n_ways", "k_shots", "q_queries"}``.
        """
        saved = self.eval_episodes
        if n_episodes is not None:
            self.eval_episodes = check_int("n_episodes", n_episodes, 1)
        try:
            self.eval(experience)
        finally:
            self.eval_episodes = saved
        return dict(self.episode_results[int(experience.current_experience)])


def command_line_signature(cls):
    """Expose :class:`EpisodicStrategy`'s options in ``cls.__init__``'s signature (for ``kta run --strategy``).

    The registry reads a strategy's options from its constructor's signature;
    the episodic options (``n_ways``, ``iterations_per_epoch`` ...) arrive
    through ``**kwargs``, so they are appended to the signature here.
    """
    import inspect

    init = cls.__init__
    own = inspect.signature(init)
    params = [p for p in own.parameters.values() if p.kind != p.VAR_KEYWORD]
    names = {p.name for p in params}
    base = inspect.signature(EpisodicStrategy.__init__)
    extra = [p for p in base.parameters.values()
             if p.kind == p.KEYWORD_ONLY and p.name not in names]
    var_kw = [p for p in own.parameters.values() if p.kind == p.VAR_KEYWORD]
    init.__signature__ = own.replace(parameters=params + extra + var_kw)
    init.__annotations__ = {**{k: v for k, v in EpisodicStrategy.__init__.__annotations__.items()
                               if k in {p.name for p in extra}}, **init.__annotations__}
    return cls


class GradientAdaptation:
    """``adapt`` / ``eval_adapt`` for strategies that adapt by gradient steps (``self._adapt``):
    MAML and its variants, ANIL."""

    def adapt(self, support_x, support_y):
        return self._adapt(support_x, support_y, self.adaptation_steps)

    def eval_adapt(self, support_x, support_y):
        # No meta-gradient at evaluation: first-order steps give the same weights, cheaper.
        return self._adapt(support_x, support_y, self.test_adaptation_steps, first_order=True)


def embedding_and_dim(model: nn.Module, features: Optional[str], who: str) -> tuple:
    """``(embedding, width)``: :func:`embedding_of` and the width of its flattened output.

    The width is ``model.feature_dim`` when the embedding is ``model.features``,
    otherwise measured on a zero input of ``model.input_shape``.
    """
    embedding = embedding_of(model, features)
    dim = getattr(model, "feature_dim", None) if embedding is getattr(model, "features", None) else None
    if dim is None:
        shape = getattr(model, "input_shape", None)
        if shape is None:
            raise ValueError(f"{who} needs the embedding size: give a model with a `feature_dim` attribute "
                             "(KTA's backbones have one) or an `input_shape` attribute")
        was = embedding.training
        embedding.eval()
        with torch.no_grad():
            dim = embedding(torch.zeros(2, *shape)).flatten(1).shape[1]
        embedding.train(was)
    return embedding, dim
