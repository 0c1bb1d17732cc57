"""Fair / invariant representations: an adversary that predicts an attribute through gradient reversal.

Edwards & Storkey 2016 ("Censoring Representations with an Adversary", ICLR);
Zhang, Lemoine & Mitchell 2018 ("Mitigating Unwanted Biases with Adversarial
Learning", AIES); the gradient reversal layer of Ganin & Lempitsky 2015.

An adversary ``A`` reads the features ``h`` of a named layer through the
gradient reversal layer ``R_lambda`` (:mod:`kta_plugins.nn.grl`) and learns to
predict a per-sample attribute ``a`` (binary or categorical); the reversal makes
the feature extractor remove what ``A`` uses:

    loss = CE(y, f(x)) + weight * CE(A(R_lambda(h)), a)

``A`` is trained to minimise the second term, the features to maximise it
(scaled by ``lambda``). With ``conditional=True`` the adversary also sees the
one-hot label, ``A([R_lambda(h), onehot(y)])`` (Zhang et al.'s *equality of
odds* adversary): it then only gains from attribute information beyond the
label, so the features are pushed to be independent of ``a`` *given* ``y``
rather than independent of ``a`` outright (which fights the task when ``a`` and
``y`` are correlated).

:func:`attribute_probe` measures the result afterwards: features of a held-out
set from the frozen model, a fresh logistic-regression (or MLP) probe trained on
half of them to predict the attribute, its accuracy on the other half against
the majority-class chance level.

How the attribute reaches the plugin (checked before the first step):

* ``attribute=None`` (default): from the data. The dataset's samples are
  ``(x, y, a)`` (:class:`scenarios.attributes.AttributeDataset`), so a
  minibatch is ``[x, y, a, task_label]``: the attribute is ``mbatch[2]``, and
  Avalanche's ``mb_x`` / ``mb_y`` / ``mb_task_id`` (``mbatch[-1]``) are
  untouched; KTA's fast tensor path keeps the four fields.
* ``attribute=fn``: a function of the input minibatch, ``fn(x) -> (n,)``
  integer tensor (an attribute computable from the input, e.g. a colour
  channel or a background level).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..compose import add_loss_term, ensure_optimizer
from ..base import (KTAPlugin, check_int, check_positive, check_range, check_type,
                    experience_steps, register_plugin)
from ..nn.grl import ganin_lambda, grad_reverse
from ..nn.tap import FeatureTap, resolve_module
from .base import probe_layer
from .dann import domain_head, seed_dropout
from .guards import GuardedPlugin

__all__ = ["FairAdversary", "adversary_head", "adversary_loss", "attribute_probe"]


def adversary_head(width: int, n_attributes: int, hidden: int = 100, seed: int = 0, layers: int = 1,
                   dropout: float = 0.0, batch_norm: bool = False) -> nn.Module:
    """``Linear(width, hidden) -> ReLU -> Linear(hidden, n_attributes)`` (``hidden=0``: one linear layer),
    initialised from ``seed``: DANN's :func:`~kta_plugins.adapt.dann.domain_head` with one output per value
    (``layers`` hidden blocks, each with optional BatchNorm and dropout)."""
    return domain_head(width, hidden, n_out=n_attributes, seed=seed, layers=layers, dropout=dropout,
                       batch_norm=batch_norm)


def adversary_loss(head: nn.Module, h: torch.Tensor, a: torch.Tensor, lambda_: float,
                   condition: Optional[torch.Tensor] = None) -> tuple:
    """``CE(head(R_lambda(h)), a)`` and the adversary's logits.

    ``condition``: extra inputs concatenated after the reversal (the one-hot label of the
    conditional adversary); they get no gradient. ``head``'s gradient is the plain one, ``h``'s is
    ``-lambda_`` times it.
    """
    z = grad_reverse(h.flatten(1), lambda_)
    if condition is not None:
        z = torch.cat([z, condition.to(z.dtype)], dim=1)
    logits = head(z)
    return F.cross_entropy(logits, a), logits


def _check_attribute_fn(x):
    """``check_plugin``'s attribute, a function of each input: mean intensity above 0.3 (about half the digits)."""
    return (x.flatten(1).mean(1) > 0.3).long()


def _as_values(a, n: int, what: str) -> torch.Tensor:
    """``a`` as a 1-D long tensor of ``n`` values >= 0, or a ``ValueError`` naming ``what``."""
    if not isinstance(a, torch.Tensor):
        try:
            a = torch.as_tensor(a)
        except Exception as e:  # noqa: BLE001 - reported with its source
            raise ValueError(f"{what} must be a tensor of integer attribute values, got {type(a).__name__}: {e}") \
                from None
    a = a.reshape(-1) if a.ndim == 2 and a.shape[1] == 1 else a
    if a.ndim != 1 or len(a) != n:
        raise ValueError(f"{what} must give one attribute value per sample ({n}), got shape {tuple(a.shape)}")
    if a.is_floating_point():
        if not torch.equal(a, a.round()):
            raise ValueError(f"{what} must hold integer attribute values (class indices), got floats")
    elif a.is_complex():
        raise ValueError(f"{what} must hold integer attribute values, got {a.dtype}")
    a = a.long()
    if n and int(a.min()) < 0:
        raise ValueError(f"{what} must hold attribute values >= 0, got {int(a.min())}")
    return a


@register_plugin("fair-adversary")
class FairAdversary(GuardedPlugin, KTAPlugin):
    """Adversarial removal of an attribute from the features of ``layer`` (Edwards & Storkey 2016;
    Zhang et al. 2018), by gradient reversal (Ganin & Lempitsky 2015).

        loss = CE(y, f(x)) + weight * CE(A(R_lambda(h)), a)

    ``h`` the output of ``layer`` (flattened), ``a`` the per-sample attribute
    (``0 .. n_attributes - 1``), ``R_lambda`` the reversal layer, and with
    ``schedule=True`` Ganin's ``lambda_p = lambda_max (2 / (1 + exp(-gamma p)) - 1)``,
    ``p`` the training progress 0 -> 1 within each experience (or over
    ``schedule_steps`` updates). The adversary ``A`` (:func:`adversary_head`) is
    created at the start of training (its width from a probe forward pass),
    kept on the plugin (never inside ``strategy.model``) and added to
    ``strategy.optimizer`` as its own parameter group (``head_lr``, default the
    optimizer's), as :class:`~kta_plugins.adapt.DANN` does with its domain
    classifier.

    The attribute comes from the data (``attribute=None``: each sample is
    ``(x, y, a)``, the minibatch ``[x, y, a, task_label]``, see
    :class:`scenarios.attributes.AttributeDataset`) or from ``attribute(x)``.
    Checked before the first step, with errors naming the argument: the layer
    exists, the attribute exists and holds integers ``>= 0`` (fewer than
    ``n_attributes``).

    Args:
        attribute: ``None`` (the attribute is field 2 of each sample) or a function of the input
            minibatch returning one integer per sample.
        layer: the feature layer (default ``"features"``).
        weight: weight of the adversary's loss (default 1.0).
        lambda_max: reversal coefficient (the final one with the schedule; default 1.0).
        schedule: use Ganin's schedule (default True); False: ``lambda = lambda_max`` throughout.
        gamma: steepness of the schedule (default 10.0).
        schedule_steps: updates over which ``p`` goes 0 -> 1 (default: the experience's
            ``train_epochs * len(dataloader)``).
        n_attributes: number of attribute values (default: ``max(2, largest value + 1)`` in the first
            training experience).
        conditional: the adversary also sees the one-hot label (Zhang et al.'s equality of odds;
            default False: Edwards & Storkey's, demographic parity).
        head_hidden: hidden width of the adversary (default 100; 0: linear).
        head_layers: hidden layers of the adversary (default 1; 0: linear).
        head_dropout: dropout after each hidden layer (default 0.0; masks drawn from a generator seeded
            by ``seed``, saved with the plugin's state).
        head_bn: BatchNorm after each hidden linear layer (default False).
        head_lr: learning rate of the adversary (default: the optimizer's).
        adversary_steps: extra plain-SGD steps of the adversary alone after every update, on that
            minibatch's (detached) features and attributes (default 0). With one joint step the encoder
            outruns the adversary: it learns to fool *that* adversary while the attribute stays linearly
            readable; a few extra steps keep the adversary near its best response, as the alternating
            schemes of Edwards & Storkey / Madras et al. (2018) do.
        adversary_lr: learning rate of those extra steps (default: ``head_lr``, else the optimizer's).
        seed: seed of the adversary's initialisation (default 0).
        guards: collapse guards (:mod:`kta_plugins.adapt.guards`: the adversary reads the attribute at
            >= 99% for long, collapsed features, source accuracy at chance): ``"warn"`` (default),
            ``"error"`` or ``"off"``.

    Example:
        >>> from kta_plugins.adapt.fair import FairAdversary, attribute_probe
        >>> bm = fair_digits(seed=0)                       # samples (x, y, background)
        >>> fair = FairAdversary(layer="features", weight=1.0, lambda_max=1.0)
        >>> s = Naive(model=model, optimizer=opt, plugins=[fair], train_epochs=30)
        >>> s.train(bm.train_stream[0])
        >>> attribute_probe(model, "features", bm.test_sets[1])["accuracy"]
        >>> # command line: kta run --scenario fair-digits --plugin fair-adversary:weight=1.0
    """

    technique = "FairAdversary"
    state_attrs = ("head", "step", "n_attributes", "dropout_rng", "guard_events")
    guard_advice = {
        "discriminator": "the attribute stays fully readable: raise weight or lambda_max, or set adversary_steps",
        "feature-variance": "lower weight (or lambda_max)",
        "source-accuracy": "lower weight (or lambda_max)",
    }
    check_args = {"attribute": _check_attribute_fn}

    def __init__(self, attribute: Optional[Callable] = None, layer: str = "features", weight: float = 1.0,
                 lambda_max: float = 1.0, schedule: bool = True, gamma: float = 10.0,
                 schedule_steps: Optional[int] = None, n_attributes: Optional[int] = None,
                 conditional: bool = False, head_hidden: int = 100, head_lr: Optional[float] = None,
                 adversary_steps: int = 0, adversary_lr: Optional[float] = None, seed: int = 0,
                 head_layers: int = 1, head_dropout: float = 0.0, head_bn: bool = False, guards: str = "warn"):
        super().__init__()
        if attribute is not None and not callable(attribute):
            raise TypeError(f"attribute must be None (read from the data) or a function of the inputs, "
                            f"got {type(attribute).__name__}")
        self.attribute = attribute
        self.layer = check_type("layer", layer, str)
        self.weight = check_positive("weight", weight, strict=False)
        self.lambda_max = check_positive("lambda_max", lambda_max, strict=False)
        self.schedule = check_type("schedule", schedule, bool)
        self.gamma = check_positive("gamma", gamma)
        self.schedule_steps = None if schedule_steps is None else check_int("schedule_steps", schedule_steps, 1)
        self.n_attributes = None if n_attributes is None else check_int("n_attributes", n_attributes, 2)
        self.conditional = check_type("conditional", conditional, bool)
        self.head_hidden = check_int("head_hidden", head_hidden, 0)
        self.head_layers = check_int("head_layers", head_layers, 0)
        self.head_dropout = check_range("head_dropout", head_dropout, 0.0, 1.0, high_inclusive=False)
        self.head_bn = check_type("head_bn", head_bn, bool)
        self._init_guards(guards)
        self.head_lr = None if head_lr is None else check_positive("head_lr", head_lr)
        self.adversary_steps = check_int("adversary_steps", adversary_steps, 0)
        self.adversary_lr = None if adversary_lr is None else check_positive("adversary_lr", adversary_lr)
        self.seed = check_int("seed", seed)
        self._dropout_gen = torch.Generator().manual_seed(self.seed + 2)
        self.head: Optional[nn.Module] = None
        self.step = 0
        self.total_steps = 1
        self.n_classes = 0
        self._tap: Optional[FeatureTap] = None
        self._h = None
        self._extra = None  # (features, condition, attribute) of the last minibatch, for adversary_steps
        self.last_lambda = 0.0
        self.last_loss = float("nan")
        self.last_accuracy = float("nan")

    # ------------------------------------------------------------------ helpers
    def _err(self, msg):
        return ValueError(f"{self.technique}: {msg}")

    def current_lambda(self) -> float:
        """``lambda_max``, times Ganin's ``2 / (1 + exp(-gamma p)) - 1`` with ``schedule=True``."""
        if not self.schedule:
            return self.lambda_max
        return self.lambda_max * ganin_lambda(min(1.0, self.step / self.total_steps), self.gamma)

    def _minibatch_attribute(self, strategy) -> torch.Tensor:
        n = len(strategy.mb_x)
        if self.attribute is not None:
            return _as_values(self.attribute(strategy.mb_x), n, "attribute(x)")
        if len(strategy.mbatch) < 4:
            raise self._err(self._no_attribute_msg(len(strategy.mbatch)))
        return _as_values(strategy.mbatch[2], n, "the attribute field (mbatch[2])")

    def _no_attribute_msg(self, n_fields):
        return (f"no attribute: the samples of this experience have {n_fields} fields (x, y, task label); "
                "pass attribute= (a function of the inputs returning one integer per sample) or train on "
                "samples (x, y, a) (scenarios.attributes.AttributeDataset, e.g. the fair-digits scenario)")

    def _experience_attributes(self, strategy) -> torch.Tensor:
        """The attribute of every sample of the experience (tensor-backed) or of its first 256 samples."""
        from scenarios.loaders import dataset_fields

        # Not tensor-backed: the first samples only (pass n_attributes= if they may miss values).
        fields = dataset_fields(strategy.adapted_dataset, limit=256)
        if self.attribute is not None:
            x = fields[0]
            try:
                with torch.no_grad():
                    a = self.attribute(x.to(strategy.device))
            except Exception as e:  # noqa: BLE001 - reported with the input shape
                raise self._err(f"attribute(x) failed on inputs of shape {tuple(x.shape)}: "
                                f"{type(e).__name__}: {e}") from None
            return _as_values(a, len(x), "attribute(x)").cpu()
        if len(fields) < 4:
            raise self._err(self._no_attribute_msg(len(fields)))
        try:
            return _as_values(fields[2], len(fields[0]), "the attribute field (sample[2])")
        except ValueError as e:
            raise self._err(str(e)) from None

    def _probe(self, strategy):
        """Flattened feature width and output width from one training sample (eval mode, no gradient)."""
        x = torch.as_tensor(strategy.adapted_dataset[0][0]).unsqueeze(0).float()
        ((h, out),) = probe_layer(strategy, self.layer, [x])
        if isinstance(out, Exception):
            raise out
        if h is None:
            raise self._err(f"layer={self.layer!r} is not used by {type(strategy.model).__name__}'s forward pass")
        return h.flatten(1).shape[1], out.shape[-1]

    @property
    def dropout_rng(self) -> torch.Tensor:
        return self._dropout_gen.get_state()

    @dropout_rng.setter
    def dropout_rng(self, state: torch.Tensor):
        self._dropout_gen.set_state(state)

    def _make_head(self, width, n_out, hidden, seed=0):
        return adversary_head(width, n_out, hidden, seed=seed, layers=self.head_layers, dropout=self.head_dropout,
                              batch_norm=self.head_bn)

    def build_state_module(self, name, state):
        if name == "head":
            ws = [state[k] for k in sorted(state, key=lambda k: int(k.split(".")[0]))
                  if k.endswith("weight") and state[k].ndim == 2]
            hidden = 0 if len(ws) == 1 else ws[0].shape[0]
            return self._make_head(ws[0].shape[1], ws[-1].shape[0], hidden)
        return super().build_state_module(name, state)

    # ------------------------------------------------------------------ hooks
    def before_training_exp(self, strategy, **kwargs):
        try:
            resolve_module(strategy.model, self.layer, argument="layer")
        except ValueError as e:
            raise self._err(str(e)) from None
        values = self._experience_attributes(strategy)
        if self.n_attributes is None:
            self.n_attributes = max(2, int(values.max()) + 1)
        if int(values.max()) >= self.n_attributes:
            raise self._err(f"attribute value {int(values.max())} is out of range: n_attributes={self.n_attributes} "
                            "(pass a larger n_attributes=)")
        width, self.n_classes = self._probe(strategy)
        in_width = width + (self.n_classes if self.conditional else 0)
        if self.head is None:
            self.head = self._make_head(in_width, self.n_attributes, self.head_hidden, seed=self.seed + 1)
        elif self.head[0].in_features != in_width or self.head[-1].out_features != self.n_attributes:
            raise self._err(f"the adversary reads {self.head[0].in_features} inputs and predicts "
                            f"{self.head[-1].out_features} values, but layer {self.layer!r} now gives {width} "
                            f"features{' + ' + str(self.n_classes) + ' label inputs' if self.conditional else ''} "
                            f"and n_attributes={self.n_attributes}")
        seed_dropout(self.head, self._dropout_gen)
        self.head.to(strategy.device).train()
        ensure_optimizer(self, strategy)  # the adversary is declared in optimizer_groups
        self.step = 0
        self.total_steps = experience_steps(strategy, self.schedule_steps)
        self._tap = FeatureTap(strategy.model, [self.layer])
        self._guard_strategy = strategy
        self._guard.reset(self.total_steps, None)

    def optimizer_groups(self, strategy):
        """The adversary head is the plugin's own group (``head_lr``, default the optimizer's)."""
        if self.head is None:
            return []
        return [{"params": list(self.head.parameters()), "lr": self.head_lr, "name": "fair-adversary.head"}]

    def after_forward(self, strategy, **kwargs):
        if self._tap is not None:
            self._h = self._tap[self.layer]

    def before_backward(self, strategy, **kwargs):
        if self._h is None:
            return
        a = self._minibatch_attribute(strategy).to(strategy.device)
        if int(a.max()) >= self.n_attributes:
            raise self._err(f"attribute value {int(a.max())} is out of range: n_attributes={self.n_attributes} "
                            "(pass a larger n_attributes=)")
        cond = F.one_hot(strategy.mb_y.long(), self.n_classes) if self.conditional else None
        self.last_lambda = self.current_lambda()
        loss, logits = adversary_loss(self.head, self._h, a, self.last_lambda, cond)
        self.last_loss = float(loss.detach())
        self.last_accuracy = float((logits.argmax(1) == a).float().mean())
        self._guard_features, self._guard_disc_acc = self._h.detach().flatten(1), self.last_accuracy
        add_loss_term(strategy, "fair-adversary", loss, weight=self.weight, owner=self)
        if self.adversary_steps:
            self._extra = (self._h.detach().flatten(1), cond, a)
        self._h = None

    def after_update(self, strategy, **kwargs):
        if self._tap is not None:
            self.step += 1
        if self._guard_features is not None:
            self._guard.observe(strategy, self.step, self._guard_features, self._guard_disc_acc)
            self._guard_features = self._guard_disc_acc = None
        if self._extra is not None:
            self._adversary_steps(strategy)

    def _adversary_steps(self, strategy):
        """``adversary_steps`` plain SGD steps of the adversary alone on the last minibatch."""
        h, cond, a = self._extra
        self._extra = None
        z = h if cond is None else torch.cat([h, cond.float()], 1)
        lr = self.adversary_lr or self.head_lr or strategy.optimizer.param_groups[0]["lr"]
        params = list(self.head.parameters())
        for _ in range(self.adversary_steps):
            grads = torch.autograd.grad(F.cross_entropy(self.head(z), a), params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(lr * g)

    def after_training_exp(self, strategy, **kwargs):
        if self._tap is not None:
            self._tap.remove()
            self._tap = None
        self._h = self._extra = None


# ------------------------------------------------------------------ probe
def _fields(data):
    """``data`` as a list of tensors ``[x, (y), (a), ...]`` (tensor dataset, Avalanche dataset or a tensor)."""
    from scenarios.loaders import dataset_fields

    if isinstance(data, torch.Tensor):
        return [data]
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
        return list(data)
    try:
        return dataset_fields(data)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"data must be a tensor of inputs, a tensor dataset or a dataset of tuples, "
                        f"got {type(data).__name__}: {e}") from None


def attribute_probe(model: nn.Module, layer: str, data, attribute=None, *, test_fraction: float = 0.5,
                    hidden: int = 0, seed: int = 0, batch_size: int = 512, device=None,
                    max_iter: int = 2000) -> dict:
    """How much of an attribute the features of ``layer`` still carry: a probe trained afterwards.

    The model is frozen (eval mode, no gradients; its weights and train/eval mode are left as they
    were). Features of ``data`` are split in two stratified halves (seeded); a probe (scikit-learn
    ``LogisticRegression`` on standardised features, or an ``MLPClassifier`` with one hidden layer of
    ``hidden`` units) is fit on one and scored on the other.

    Args:
        model: the trained network.
        layer: module whose output is probed (e.g. ``"features"``).
        data: held-out data: an :class:`~scenarios.attributes.AttributeDataset`, an Avalanche dataset
            (samples ``(x, y, a, t)``), a tuple of tensors, or a tensor of inputs.
        attribute: ``None`` (field 2 of ``data``), a tensor of one value per sample, or a function of
            the inputs.
        test_fraction: share of ``data`` the probe is scored on (default 0.5).
        hidden: 0 (logistic regression, default) or the hidden width of an MLP probe.
        seed: seed of the split and of the MLP probe.
        batch_size: feature extraction batch size.
        device: where the model runs (default: its parameters' device).
        max_iter: iterations of the probe's solver.

    Returns:
        ``{"accuracy": probe test accuracy, "chance": majority-class rate on the test half
        (the training half's most frequent value), "train_accuracy", "n_train", "n_test",
        "n_features"}``, accuracies in [0, 1].

    Example:
        >>> r = attribute_probe(model, "features", bm.test_sets[1])
        >>> print(f"background recoverable at {r['accuracy']:.2f} (chance {r['chance']:.2f})")
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..transfer.transferability import extract

    check_type("model", model, nn.Module)
    check_type("layer", layer, str)
    resolve_module(model, layer, argument="layer")
    check_range("test_fraction", test_fraction, 0, 1, low_inclusive=False, high_inclusive=False)
    hidden = check_int("hidden", hidden, 0)
    seed = check_int("seed", seed)
    batch_size = check_int("batch_size", batch_size, 1)
    max_iter = check_int("max_iter", max_iter, 1)
    fields = _fields(data)
    x = fields[0]
    if attribute is None:
        if len(fields) < 3:
            raise ValueError(f"attribute: data has {len(fields)} field(s) and no attribute field (x, y, a); "
                             "pass attribute= (a tensor of one value per sample or a function of the inputs)")
        a = fields[2]
    elif callable(attribute) and not isinstance(attribute, torch.Tensor):
        with torch.no_grad():
            a = attribute(x)
    else:
        a = attribute
    a = _as_values(a, len(x), "attribute").cpu().numpy()
    values = np.unique(a)
    if len(values) < 2:
        raise ValueError(f"attribute: data holds a single attribute value ({values.tolist()}); nothing to probe")
    if device is None:  # where the model is
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    h = extract(model, x.to(device), layer, batch_size)[0].cpu().numpy().astype(np.float64)
    if not np.isfinite(h).all():
        raise ValueError(f"layer={layer!r} gives non-finite features (the model diverged); nothing to probe")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(a), dtype=bool)
    for v in values:  # stratified split
        idx = rng.permutation(np.flatnonzero(a == v))
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    tr, te = ~test, test
    if tr.sum() == 0 or te.sum() == 0:
        raise ValueError(f"data: {len(a)} samples are too few to split with test_fraction={test_fraction}")
    clf = LogisticRegression(max_iter=max_iter) if hidden == 0 else \
        MLPClassifier((hidden,), max_iter=max_iter, random_state=seed)
    probe = make_pipeline(StandardScaler(), clf)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the score is what we report
        probe.fit(h[tr], a[tr])
    counts = np.bincount(a[tr])
    majority = int(np.argmax(counts))
    return {
        "accuracy": float(probe.score(h[te], a[te])),
        "chance": float(np.mean(a[te] == majority)),
        "train_accuracy": float(probe.score(h[tr], a[tr])),
        "n_train": int(tr.sum()), "n_test": int(te.sum()), "n_features": int(h.shape[1]),
    }
