"""``check_plugin``: the contract every KTA plugin honours, checkable from any test suite.

Like scikit-learn's ``check_estimator``: one call runs a plugin on tiny
class-, task- and domain-incremental streams and checks each clause of the
contract. A failing clause is reported with what was expected and what
happened.

Clauses (names used in reports and errors):

``trains``
    trains and evaluates end to end on every stream type, losses finite.
``eval-is-pure``
    ``strategy.eval`` leaves the model's weights and buffers and the plugin's
    training state (its ``state_dict``) unchanged.
``frozen-out-of-optimizer``
    no parameter of a frozen module the plugin owns (teacher, anchor) is in
    the optimizer, and no such module sits inside ``strategy.model``.
``state-round-trip``
    ``state_dict()`` survives ``torch.save`` + ``torch.load(weights_only=True)``,
    and a fresh plugin loaded from it, with the model and optimizer restored,
    gives the same next training losses as the uninterrupted run.
``seeded``
    two runs with the same seed give identical losses.
``hooks-accept-kwargs``
    every hook the plugin defines accepts ``**kwargs``.
``argument-errors``
    bad constructor arguments (wrong types; NaN / infinity for numbers),
    generated with hypothesis, raise ``ValueError`` / ``TypeError`` whose
    message names the argument.
``composes``
    :func:`check_composition` with each plugin of :data:`REFERENCE_SET`
    (replay, a distiller, an aligner, an optimizer-shaping plugin) passes, or
    the pair is refused before training with an error naming both.

Example:
    >>> from kta_plugins.testing import check_plugin
    >>> def test_my_plugin():
    ...     check_plugin(MyPlugin)           # or a factory: lambda: MyPlugin(strength=0.1)
"""
from __future__ import annotations

import copy
import inspect
import io
import math
import typing
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from avalanche.core import SupervisedPlugin
from torch import nn

__all__ = ["check_plugin", "PluginContractError", "ContractReport", "CLAUSES", "tiny_streams",
           "check_composition", "COMPOSITION_CLAUSES", "REFERENCE_SET", "registry_factories", "reference_teacher"]

CLAUSES = (
    "trains", "eval-is-pure", "frozen-out-of-optimizer", "state-round-trip", "seeded",
    "hooks-accept-kwargs", "argument-errors", "composes",
)

_HOOK_PREFIXES = ("before_", "after_")


class PluginContractError(AssertionError):
    """Raised by :func:`check_plugin` when clauses fail; ``report`` has the details."""

    def __init__(self, report: "ContractReport"):
        self.report = report
        super().__init__(str(report))


@dataclass
class ContractReport:
    plugin: str
    results: dict = field(default_factory=dict)  # clause -> (status, message); status in passed/failed/skipped

    def passed(self, clause: str) -> bool:
        return self.results.get(clause, ("",))[0] == "passed"

    @property
    def failed(self) -> list[str]:
        return [c for c, (s, _) in self.results.items() if s == "failed"]

    def __str__(self) -> str:
        lines = [f"check_plugin({self.plugin}):"]
        for clause, (status, msg) in self.results.items():
            lines.append(f"  [{status}] {clause}" + (f": {msg}" if msg else ""))
        return "\n".join(lines)


# ------------------------------------------------------------------ tiny world
def tiny_streams(n_train: int = 240, n_test: int = 120) -> dict:
    """Tiny class-, task- and domain-incremental streams (4 digit classes, 2 experiences)."""
    key = (n_train, n_test)
    if key not in _STREAMS:  # built once per process: many checks share them (nothing mutates them)
        _STREAMS[key] = _tiny_streams(n_train, n_test)
    return _STREAMS[key]


_STREAMS: dict = {}


def _tiny_streams(n_train, n_test):
    from scenarios.datasets import TensorClassificationDataset, digits
    from scenarios.shifts import Identity, Permutation
    from scenarios.streams import class_incremental, domain_incremental, task_incremental

    train, test = digits(seed=0)

    def small(ds, n):
        keep = torch.nonzero(ds.y < 4).flatten()[:n]
        return TensorClassificationDataset(ds.x[keep], ds.y[keep])

    pair = (small(train, n_train), small(test, n_test))
    return {
        "class-incremental": class_incremental(pair, n_experiences=2, class_order=[0, 1, 2, 3]),
        "task-incremental": task_incremental(pair, n_experiences=2, class_order=[0, 1, 2, 3]),
        "domain-incremental": domain_incremental(pair, [Identity(), Permutation(seed=1)]),
    }


def _default_model() -> nn.Module:
    from kta_plugins.nn import MLP

    return MLP((1, 8, 8), 4, hidden=(16,))


class _LossRecorder(SupervisedPlugin):
    """Records ``strategy.loss`` just before backward (after every other plugin changed it)."""

    def __init__(self):
        super().__init__()
        self.losses: list[float] = []

    def before_backward(self, strategy, **kwargs):
        self.losses.append(float(strategy.loss.detach().sum()))


def _make_strategy(plugin, model, seed):
    recorder = _LossRecorder()
    return _make_strategy_list([plugin, recorder], model, seed)[0], recorder


def _run(plugin_factory, model_factory, stream, seed, n_exps=None):
    torch.manual_seed(seed)
    model = model_factory()
    plugin = plugin_factory()
    s, rec = _make_strategy(plugin, model, seed)
    exps = list(stream.train_stream)[: n_exps or len(stream.train_stream)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in exps:
            s.train(e)
            s.eval(stream.test_stream)
    return s, plugin, rec


# ------------------------------------------------------------------ helpers
def _snapshot(module: nn.Module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a, b) -> Optional[str]:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return f"{type(a).__name__} vs {type(b).__name__}"
        if a.shape != b.shape or not torch.equal(a, b):
            return "tensor values differ"
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"keys differ: {sorted(set(a) ^ set(b))}"
        for k in a:
            d = _same_state(a[k], b[k])
            if d:
                return f"{k}: {d}"
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return "lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _same_state(x, y)
            if d:
                return f"[{i}]: {d}"
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b else f"{a!r} != {b!r}"


def _plugin_state(plugin):
    if hasattr(plugin, "state_dict"):
        return copy.deepcopy(plugin.state_dict())
    return None


def _owned_modules(plugin, model):
    """Modules the plugin holds (directly, or in lists/dicts), excluding ``strategy.model`` itself."""
    found = []

    def visit(v, depth=0):
        if isinstance(v, nn.Module):
            if v is not model:
                found.append(v)
        elif depth < 2 and isinstance(v, (list, tuple)):
            for x in v:
                visit(x, depth + 1)
        elif depth < 2 and isinstance(v, dict):
            for x in v.values():
                visit(x, depth + 1)

    for name, value in vars(plugin).items():
        visit(value)
    return found


def _hook_names(plugin):
    """The hooks ``plugin``'s class defines itself (not Avalanche's no-op defaults)."""
    names = []
    for name in dir(type(plugin)):
        if not name.startswith(_HOOK_PREFIXES):
            continue
        fn = getattr(type(plugin), name)
        if callable(fn) and fn is not getattr(SupervisedPlugin, name, None):
            names.append(name)
    return names


def _constructor(factory):
    if inspect.isclass(factory):
        return factory.__init__, True
    if inspect.isfunction(factory) or inspect.ismethod(factory):
        return factory, False
    return None, False


# ------------------------------------------------------------------ clauses
def _clause_trains(ctx):
    for kind, stream in ctx["streams"].items():
        s, plugin, rec = _run(ctx["factory"], ctx["model_factory"], stream, ctx["seed"])
        if not rec.losses:
            return "failed", f"on the {kind} stream: expected training iterations, none ran"
        if not all(math.isfinite(l) for l in rec.losses):
            return "failed", f"on the {kind} stream: expected finite losses, got {rec.losses[:5]}..."
    return "passed", ""


def _clause_eval_pure(ctx):
    stream = ctx["streams"]["class-incremental"]
    s, plugin, rec = _run(ctx["factory"], ctx["model_factory"], stream, ctx["seed"], n_exps=1)
    before_model, before_plugin = _snapshot(s.model), _plugin_state(plugin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.eval(stream.test_stream)
    diff = _same_state(before_model, _snapshot(s.model))
    if diff:
        return "failed", f"expected eval to leave model weights unchanged; after eval: {diff}"
    if before_plugin is not None:
        diff = _same_state(before_plugin, _plugin_state(plugin))
        if diff:
            return "failed", f"expected eval to leave the plugin's training state unchanged; after eval: {diff}"
    return "passed", ""


def _clause_frozen(ctx):
    stream = ctx["streams"]["class-incremental"]
    s, plugin, rec = _run(ctx["factory"], ctx["model_factory"], stream, ctx["seed"])
    in_opt = {id(p) for g in s.optimizer.param_groups for p in g["params"]}
    model_params = {id(p) for p in s.model.parameters()}
    for m in _owned_modules(plugin, s.model):
        params = list(m.parameters())
        if not params or any(p.requires_grad for p in params):
            continue  # a trainable module of the plugin's own (e.g. a regressor) may be optimized
        name = type(m).__name__
        if any(id(p) in in_opt for p in params):
            return "failed", f"expected the frozen {name} held by the plugin to stay out of the optimizer; " \
                             f"{sum(id(p) in in_opt for p in params)} of its parameters are in it"
        if any(id(p) in model_params for p in params):
            return "failed", f"expected the frozen {name} held by the plugin to stay outside strategy.model"
    return "passed", ""


def _clause_round_trip(ctx):
    if not hasattr(ctx["factory"](), "state_dict"):
        return "failed", "expected plugin.state_dict() / load_state_dict(); the plugin has none"
    stream = ctx["streams"]["class-incremental"]
    seed = ctx["seed"]
    # Uninterrupted: train exp 0, then exp 1.
    torch.manual_seed(seed)
    model = ctx["model_factory"]()
    plugin = ctx["factory"]()
    s, rec = _make_strategy(plugin, model, seed)
    exps = list(stream.train_stream)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.train(exps[0])
        buf = io.BytesIO()
        torch.save({"plugin": plugin.state_dict(), "model": s.model.state_dict(),
                    "optimizer": s.optimizer.state_dict(), "gen": s._gen.get_state(),
                    "clock": {k: v for k, v in vars(s.clock).items() if isinstance(v, int)}}, buf)
        n0 = len(rec.losses)
        s.train(exps[1])
        expected = rec.losses[n0:]
        # Resumed: fresh plugin, model and optimizer from the saved state.
        buf.seek(0)
        try:
            saved = torch.load(buf, weights_only=True)
        except Exception as e:  # noqa: BLE001 - report whatever weights_only refuses
            return "failed", f"expected state_dict() to load with weights_only=True; got {type(e).__name__}: {e}"
        torch.manual_seed(seed + 1)  # the resumed run must not depend on the global RNG state
        model2 = ctx["model_factory"]()
        plugin2 = ctx["factory"]()
        s2, rec2 = _make_strategy(plugin2, model2, seed)
        # Plugins that reshape the model (LoRA, adapters) do so while training starts: load what
        # fits now (anchors taken at the start see the right weights) and everything again below.
        s2.model.load_state_dict(saved["model"], strict=False)
        try:
            plugin2.load_state_dict(saved["plugin"])
        except Exception as e:  # noqa: BLE001
            return "failed", f"expected load_state_dict to accept its own state; got {type(e).__name__}: {e}"
        s2._gen.set_state(saved["gen"])
        for k, v in saved["clock"].items():
            setattr(s2.clock, k, v)
        # The optimizer is rebuilt by Avalanche at the start of the experience; load its state after that.
        loaded = {"done": False}

        class _LoadOpt(SupervisedPlugin):
            def before_training_epoch(self, strategy, **kwargs):
                if not loaded["done"]:
                    strategy.model.load_state_dict(saved["model"])
                    try:
                        strategy.optimizer.load_state_dict(saved["optimizer"])
                    except ValueError:
                        pass  # parameter groups changed (the plugin's own doing); momentum-free SGD anyway
                    loaded["done"] = True

        s2.plugins.insert(0, _LoadOpt())
        s2.train(exps[1])
    got = rec2.losses
    if len(got) != len(expected) or any(a != b for a, b in zip(got, expected)):
        first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        return "failed", (f"expected the resumed run to give the same next losses; iteration {first}: "
                          f"uninterrupted {expected[first] if first < len(expected) else None}, "
                          f"resumed {got[first] if first < len(got) else None}")
    return "passed", ""


def _clause_seeded(ctx):
    stream = ctx["streams"]["class-incremental"]
    runs = [_run(ctx["factory"], ctx["model_factory"], stream, ctx["seed"])[2].losses for _ in range(2)]
    if runs[0] != runs[1]:
        i = next(i for i, (a, b) in enumerate(zip(*runs)) if a != b) if len(runs[0]) == len(runs[1]) else 0
        return "failed", (f"expected two runs with seed {ctx['seed']} to give identical losses; "
                          f"they differ at iteration {i}: {runs[0][i]} vs {runs[1][i]}")
    return "passed", ""


def _clause_kwargs(ctx):
    plugin = ctx["factory"]()
    bad = []
    for name in _hook_names(plugin):
        sig = inspect.signature(getattr(plugin, name))
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            bad.append(name)
    if bad:
        return "failed", f"expected every hook to accept **kwargs; these do not: {bad}"
    return "passed", ""


_BAD_TYPED = {int: ["three", 2.5, object()], float: ["fast", object(), float("nan"), float("inf")],
              bool: ["maybe", object()]}


def _numeric_params(ctor):
    sig = inspect.signature(ctor)
    try:
        hints = typing.get_type_hints(ctor)
    except Exception:  # noqa: BLE001
        hints = {}
    out = {}
    for p in sig.parameters.values():
        if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        ann = hints.get(p.name, p.annotation)
        if ann is inspect.Parameter.empty and p.default is not inspect.Parameter.empty:
            ann = type(p.default)
        if typing.get_origin(ann) in (typing.Union,):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            ann = args[0] if len(args) == 1 else None
        if ann in (int, float, bool):
            out[p.name] = ann
    return out


def _clause_arguments(ctx):
    ctor, _ = _constructor(ctx["constructor"])
    if ctor is None:
        return "skipped", "the factory's constructor cannot be inspected; pass constructor="
    params = _numeric_params(ctor)
    if not params:
        return "skipped", "no int / float / bool constructor arguments to exercise"
    from hypothesis import given, settings
    from hypothesis import strategies as st

    failures = []
    for name, typ in params.items():
        values = list(_BAD_TYPED[typ])

        @settings(max_examples=len(values) + 4, deadline=None, derandomize=True, database=None)
        @given(st.sampled_from(values) | (st.text(min_size=1, max_size=4) if typ is not bool else st.nothing()))
        def probe(value):
            try:
                ctx["constructor"](**{name: value})
            except (ValueError, TypeError) as e:
                if name not in str(e):
                    raise AssertionError(f"{name}={value!r}: error does not name {name!r}: {e}")
                return
            except Exception as e:  # noqa: BLE001
                raise AssertionError(f"{name}={value!r}: expected ValueError/TypeError, got {type(e).__name__}: {e}")
            raise AssertionError(f"{name}={value!r}: expected ValueError/TypeError naming {name!r}, nothing raised")

        try:
            probe()
        except AssertionError as e:
            failures.append(str(e).splitlines()[0])
        except BaseExceptionGroup as group:  # hypothesis reports several distinct failures together
            failures += [str(e).splitlines()[0] for e in group.exceptions]
    if failures:
        return "failed", "; ".join(failures[:4]) + (f" (+{len(failures) - 4} more)" if len(failures) > 4 else "")
    return "passed", ""


def _clause_composes(ctx):
    factory = ctx["factory"]
    name = getattr(factory, "__name__", type(factory).__name__)
    problems, refused, skipped = [], [], []
    for ref_name, ref in _reference_set().items():
        report = check_composition(factory, ref, model_factory=ctx["model_factory"], names=[name, ref_name],
                                   seed=ctx["seed"], raise_on_failure=False)
        status = report.results["composes"][0]
        if report.failed:
            problems.append("; ".join(f"{c}: {m}" for c, (s, m) in report.results.items() if s == "failed"))
        elif status == "refused":
            refused.append(ref_name)
        elif status == "skipped":
            skipped.append(ref_name)
    if problems:
        return "failed", " | ".join(problems)[:600]
    note = ", ".join(x for x in (refused and f"refused with {refused}", skipped and f"no shared scenario with {skipped}") if x)
    return "passed", note


_CHECKS = {
    "trains": _clause_trains, "eval-is-pure": _clause_eval_pure, "frozen-out-of-optimizer": _clause_frozen,
    "state-round-trip": _clause_round_trip, "seeded": _clause_seeded, "hooks-accept-kwargs": _clause_kwargs,
    "argument-errors": _clause_arguments, "composes": _clause_composes,
}


def check_plugin(
    plugin_factory: Callable,
    *,
    constructor: Optional[Callable] = None,
    model_factory: Optional[Callable[[], nn.Module]] = None,
    clauses: Sequence[str] = CLAUSES,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> ContractReport:
    """Check that a plugin honours KTA's plugin contract (see the module docstring).

    Args:
        plugin_factory: a zero-argument callable returning a fresh plugin (a
            class with usable defaults, or e.g. ``lambda: MyPlugin(alpha=0.5)``).
        constructor: the callable whose keyword arguments are probed with bad
            values (default: ``plugin_factory`` when it is a class or function).
        model_factory: builds the model (default: the factory's ``check_model``
            attribute if it has one, else a small MLP on 4 digit classes whose
            submodules are ``features`` and ``classifier``).
        clauses: which clauses to check (default: all of :data:`CLAUSES`).
        seed: the seed of the runs.
        raise_on_failure: raise :class:`PluginContractError` when a clause fails.

    Returns:
        a :class:`ContractReport` (clause -> passed / failed / skipped, with messages).
    """
    target = constructor or plugin_factory
    if model_factory is None:
        model_factory = getattr(target, "check_model", None)
    unknown = [c for c in clauses if c not in _CHECKS]
    if unknown:
        raise ValueError(f"clauses: unknown clause(s) {unknown}; known: {list(CLAUSES)}")
    if not callable(plugin_factory):
        raise TypeError(f"plugin_factory must be callable, got {type(plugin_factory).__name__}")
    name = getattr(plugin_factory, "__name__", type(plugin_factory).__name__)
    report = ContractReport(plugin=name)
    ctx = {
        "factory": plugin_factory, "constructor": constructor or plugin_factory,
        "model_factory": model_factory or _default_model, "seed": seed, "streams": tiny_streams(),
    }
    for clause in clauses:
        try:
            report.results[clause] = _CHECKS[clause](ctx)
        except Exception as e:  # noqa: BLE001 - a crash is a failed clause, reported with its cause
            report.results[clause] = ("failed", f"expected to run; raised {type(e).__name__}: {e}")
    if raise_on_failure and report.failed:
        raise PluginContractError(report)
    return report


# ================================================================== composition
#: Clauses of :func:`check_composition`.
COMPOSITION_CLAUSES = ("composes", "own-terms", "optimizer", "taps-current", "state-round-trip", "seeded")


def reference_teacher() -> nn.Module:
    """A fixed (seeded, untrained) teacher of the checker's default architecture."""
    state = torch.random.get_rng_state()
    torch.manual_seed(123)
    teacher = _default_model()
    torch.random.set_rng_state(state)
    return teacher


def registry_factories() -> dict:
    """``{name: factory}``: a working factory per registered plugin (its ``check_args``; plugins taking a
    ``teacher`` get :func:`reference_teacher`, so that they distil from the first experience). Each factory
    carries the plugin's ``check_model`` (or ``None``)."""
    from kta_plugins.registry import PLUGINS, load_all

    load_all()
    out = {}
    for name in PLUGINS.names():
        factory = PLUGINS.get(name)
        args = dict(getattr(factory, "check_args", {}) or {})
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        if "teacher" in params:
            args.setdefault("teacher", reference_teacher())

        def make(factory=factory, args=args):
            return factory(**args)

        make.__name__ = name
        make.check_model = getattr(factory, "check_model", None)
        out[name] = make
    return out


def _reference_target():
    from scenarios.datasets import digits

    train, _ = digits(seed=0)
    return train.x[train.y >= 4][:64] * 0.5  # unlabeled "target" inputs: other digits, dimmed


def _reference_set() -> dict:
    """The plugins every plugin is composed with by ``check_plugin``'s ``composes`` clause:
    replay (replaces the loader), a distiller (re-weights the criterion, reads a tap), an aligner
    (extra forwards on target data, owns a head) and an optimizer-shaping plugin."""
    from kta_plugins.registry import load_all

    load_all()
    from kta_plugins.adapt import DANN
    from kta_plugins.distill import KD
    from kta_plugins.registry import replay
    from kta_plugins.transfer import LayerwiseLR

    return {"replay": lambda: replay(mem_size=32), "kd": lambda: KD(teacher="previous"),
            "dann": lambda: DANN(target=_reference_target()), "layerwise-lr": lambda: LayerwiseLR()}


REFERENCE_SET = ("replay", "kd", "dann", "layerwise-lr")


class _ComposeProbe(SupervisedPlugin):
    """Records, per training iteration, each plugin's own ledger terms (before arbitration), whether
    every feature tap on the model holds the current minibatch's features, and the final loss; per
    experience, whether every declared parameter is in the optimizer and moved."""

    loss_stage = "measure"  # runs when the strategy finalizes the loss: after every plugin's before_backward

    def __init__(self, plugins):
        super().__init__()
        self.plugins = list(plugins)
        self.iterations: list[dict] = []
        self.losses: list[float] = []
        self.tap_errors: list[str] = []
        self.optimizer_errors: list[str] = []
        self._before: dict = {}

    def before_training_exp(self, strategy, **kwargs):
        self._exp = strategy.experience.current_experience
        self._iter = 0
        self._before = {}

    def finalize_loss(self, strategy):
        from kta_plugins.compose import loss_ledger

        ledger = loss_ledger(strategy)
        record = {"exp": self._exp, "iter": self._iter, "x": float(strategy.mb_x.double().sum()), "terms": {}}
        ours = {id(p): k for k, p in enumerate(self.plugins)}
        for term in ledger.terms.values():
            k = ours.get(id(term.owner))
            if k is not None:
                record["terms"].setdefault(k, {})[term.name.split("#")[0]] = float(term.contribution.detach())
        contributions = ledger.contributions()
        if "other" in contributions:
            record["other"] = float(contributions["other"].detach())
        self.iterations.append(record)
        self._check_taps(strategy)

    def _check_taps(self, strategy):
        from kta_plugins.compose import extra_forward
        from kta_plugins.nn.tap import live_taps

        model = strategy.model
        for tap in live_taps(model):
            names = [n for n in tap.names if n in tap.features and isinstance(tap.features[n], torch.Tensor)]
            if not names:
                continue
            # The reference forward runs on copies of the buffers (BatchNorm statistics): the originals are
            # neither changed nor bumped in version (the iteration's graph may have saved them).
            saved = [(m, dict(m._buffers)) for m in model.modules() if m._buffers]
            for m, bufs in saved:
                m._buffers.update({k: b.clone() for k, b in bufs.items() if b is not None})
            try:
                with torch.no_grad():
                    _, ref = extra_forward(strategy, strategy.mb_x, task_labels=strategy.mb_task_id, layers=names)
            finally:
                for m, bufs in saved:
                    m._buffers.update(bufs)
            for n in names:
                got = tap.features[n].detach()
                if got.shape != ref[n].shape or not torch.allclose(got, ref[n], atol=1e-5, rtol=1e-4):
                    self.tap_errors.append(f"experience {self._exp} iteration {self._iter}: the tap on {n!r} "
                                           f"holds features of other inputs (shape {tuple(got.shape)}), not the "
                                           f"current minibatch's {tuple(ref[n].shape)}")

    def before_update(self, strategy, **kwargs):
        for g in strategy.optimizer.param_groups:
            for p in g["params"]:
                if id(p) not in self._before:
                    self._before[id(p)] = p.detach().clone()

    def after_backward(self, strategy, **kwargs):
        self.losses.append(float(strategy.loss.detach().sum()))
        self._iter += 1

    def after_training_exp(self, strategy, **kwargs):
        in_opt = {id(p) for g in strategy.optimizer.param_groups for p in g["params"]}
        in_model = {id(p) for p in strategy.model.parameters()}
        for n, p in strategy.model.named_parameters():
            if p.requires_grad and id(p) not in in_opt:
                self.optimizer_errors.append(f"experience {self._exp}: trainable model parameter {n!r} "
                                             "is not in the optimizer")
        for p_k in self.plugins:
            declare = getattr(p_k, "optimizer_groups", None)
            if declare is None:
                continue
            for decl in declare(strategy) or ():
                for q in decl["params"]:
                    label = f"{type(p_k).__name__}'s parameter group {decl.get('name') or '?'}"
                    if id(q) not in in_opt:
                        self.optimizer_errors.append(f"experience {self._exp}: {label} is not in the optimizer")
                    elif id(q) in in_model:
                        continue  # a re-scaled model parameter: another plugin may freeze it
                    elif q.requires_grad and id(q) in self._before and torch.equal(self._before[id(q)], q.detach()):
                        self.optimizer_errors.append(f"experience {self._exp}: {label} did not move")
                    elif q.requires_grad and id(q) not in self._before:
                        self.optimizer_errors.append(f"experience {self._exp}: {label} never reached an update")


def _compose_run(factories, model_factory, stream, seed, join_at=None, save_after=None, resume=None):
    """Train ``factories``' plugins together on ``stream``; ``join_at[k]``: experience at which plugin k
    joins (default 0). Returns (strategy, plugins, probe, saved state after experience ``save_after``)."""
    torch.manual_seed(seed)
    model = model_factory()
    plugins = [f() for f in factories]
    join_at = join_at or [0] * len(plugins)
    probe = _ComposeProbe(plugins)
    start = [p for p, j in zip(plugins, join_at) if j == 0]
    s, _ = _make_strategy_list(start + [probe], model, seed)
    exps = list(stream.train_stream)
    saved = None
    first = 0
    if resume is not None:
        first = resume["next"]
        fits = s.model.load_state_dict(resume["model"], strict=False)
        # entries that fit only once a plugin reshaped the model (LoRA's wrapped layers) load when
        # training starts; the rest loads now, so that plugins acting at the experience's start
        # (AdaBN's statistics) act on the restored model as in the uninterrupted run
        late = {k: v for k, v in resume["model"].items() if k in set(fits.unexpected_keys)}
        for p, st in zip(plugins, resume["plugins"]):
            if st is not None:
                p.load_state_dict(st)
        s._gen.set_state(resume["gen"])
        for k, v in resume["clock"].items():
            setattr(s.clock, k, v)
        loaded = {"done": False}

        class _LoadOpt(SupervisedPlugin):  # first in the list: before every other plugin's hooks
            def before_training_exp(self, strategy, **kwargs):
                if late and not loaded["done"]:  # the model is reshaped by now (after dataset adaptation)
                    strategy.model.load_state_dict(late, strict=False)

            def before_training_epoch(self, strategy, **kwargs):
                if not loaded["done"]:
                    try:
                        strategy.optimizer.load_state_dict(resume["optimizer"])
                    except ValueError:
                        pass  # groups changed by a plugin's own doing; SGD without momentum keeps no state
                    loaded["done"] = True

        s.plugins.insert(0, _LoadOpt())
        for p, j in zip(plugins, join_at):
            if j > 0 and j <= first and p not in s.plugins:
                s.plugins.insert(len(s.plugins) - 1, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, e in enumerate(exps):
            if i < first:
                continue
            for p, j in zip(plugins, join_at):
                if j == i and j > 0 and p not in s.plugins:
                    s.plugins.insert(len(s.plugins) - 1, p)
            s.train(e)
            if save_after is not None and i == save_after:
                buf = io.BytesIO()
                torch.save({"plugins": [p.state_dict() if hasattr(p, "state_dict") else None for p in plugins],
                            "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
                            "gen": s._gen.get_state(), "next": i + 1,
                            "clock": {k: v for k, v in vars(s.clock).items() if isinstance(v, int)}}, buf)
                buf.seek(0)
                saved = buf
    return s, plugins, probe, saved


def _make_strategy_list(plugins, model, seed):
    """A tiny strategy (``(strategy, None)``): Avalanche's template with KTA's meeting points and a
    seeded tensor loader (kta_plugins may not import strategies)."""
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.templates import SupervisedTemplate

    from kta_plugins.compose import ComposeMixin
    from scenarios.loaders import TensorBatchLoader, tensor_view

    class _Tiny(ComposeMixin, SupervisedTemplate):
        def make_train_dataloader(self, shuffle=True, **kw):
            fields = tensor_view(self.adapted_dataset)
            if fields is None:
                return super().make_train_dataloader(shuffle=shuffle, **kw)
            self.dataloader = TensorBatchLoader(fields, self.train_mb_size, shuffle, self._gen)

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = _Tiny(model=model, optimizer=opt, train_mb_size=32, train_epochs=1, eval_mb_size=128,
                  plugins=list(plugins), evaluator=EvaluationPlugin(loggers=[]))
    s._gen = torch.Generator().manual_seed(seed)
    return s, None


_ALONE_CACHE: dict = {}


def _alone(factory, model_factory, stream_key, stream, seed):
    key = (factory, model_factory, stream_key, seed)
    if key not in _ALONE_CACHE:
        try:
            _ALONE_CACHE[key] = _compose_run([factory], model_factory, stream, seed)[2]
        except Exception as e:  # noqa: BLE001 - remembered: the same failure for every pair
            _ALONE_CACHE[key] = e
    if isinstance(_ALONE_CACHE[key], Exception):
        raise _ALONE_CACHE[key]
    return _ALONE_CACHE[key]


def _first_terms(probe, k):
    return next(((r["exp"], r["iter"], r["x"], r["terms"][k]) for r in probe.iterations if k in r["terms"]), None)


def check_composition(
    factory_a: Callable,
    factory_b: Callable,
    *,
    model_factory: Optional[Callable[[], nn.Module]] = None,
    names: Optional[Sequence[str]] = None,
    seed: int = 0,
    clauses: Sequence[str] = COMPOSITION_CLAUSES,
    raise_on_failure: bool = True,
) -> ContractReport:
    """Check that two plugins compose, in both orders, on a tiny class-incremental stream.

    Clauses (a failing one names both plugins):

    ``composes``
        the strategy accepts the pair; a pair that cannot share the loss ledger must be refused
        up front with a ``ValueError`` naming both (then reported as ``refused``; the other clauses
        are skipped).
    ``own-terms``
        each plugin's own loss-ledger terms equal its terms when it runs alone, on the same
        minibatch and state (the first iteration at which it adds terms; a partner joins at that
        experience when the plugin starts late, as with ``teacher="previous"``).
    ``optimizer``
        every parameter a plugin declares (``optimizer_groups``) is in the optimizer and moves; every
        trainable model parameter is in the optimizer.
    ``taps-current``
        every :class:`~kta_plugins.nn.FeatureTap` on the model holds the current minibatch's features
        when the loss is finalized (extra forwards do not leak into other plugins).
    ``state-round-trip``
        both plugins' ``state_dict`` (plus model, optimizer) saved after experience 1 and loaded into
        fresh plugins give the same next losses.
    ``seeded``
        the same seed gives the same losses.

    Example:
        >>> from kta_plugins.testing import check_composition
        >>> check_composition(lambda: KD(teacher="previous"), lambda: CORAL(target=x_target))
    """
    from kta_plugins.compose import check_roles

    unknown = [c for c in clauses if c not in COMPOSITION_CLAUSES]
    if unknown:
        raise ValueError(f"clauses: unknown clause(s) {unknown}; known: {list(COMPOSITION_CLAUSES)}")
    if names is None:
        names = [getattr(f, "__name__", type(f).__name__) for f in (factory_a, factory_b)]
    names = list(names)
    report = ContractReport(plugin=f"{names[0]} + {names[1]}")
    if model_factory is None:
        models = [getattr(f, "check_model", None) for f in (factory_a, factory_b)]
        models = [m for m in models if m is not None]
        model_factory = models[0] if models else _default_model
    stream = tiny_streams(n_train=64, n_test=32)["class-incremental"]  # one iteration per experience
    factories = [factory_a, factory_b]
    try:
        check_roles([factory_a(), factory_b()])
    except ValueError as e:
        msg = str(e)
        plugin_types = [type(f()).__name__ for f in factories]
        ok = all(t in msg for t in plugin_types)
        report.results["composes"] = ("refused" if ok else "failed",
                                      msg if ok else f"refused without naming both plugins: {msg}")
        for c in clauses:
            if c != "composes":
                report.results[c] = ("skipped", "the pair is refused")
        if raise_on_failure and report.failed:
            raise PluginContractError(report)
        return report
    for k in (0, 1):  # a pair shares a scenario only if each plugin trains alone on the pair's model
        try:
            _alone(factories[k], model_factory, "ci-64", stream, seed)
        except Exception as e:  # noqa: BLE001
            why = (f"{names[k]} does not train alone on the pair's model "
                   f"({getattr(model_factory, '__qualname__', model_factory)}): {type(e).__name__}: {e}")
            for c in clauses:
                report.results[c] = ("skipped", why)
            return report
    report.results["composes"] = ("passed", "")
    runs = {}
    try:
        for order in ((0, 1), (1, 0)):
            runs[order] = _compose_run([factories[k] for k in order], model_factory, stream, seed,
                                       save_after=0 if order == (0, 1) else None)
    except Exception as e:  # noqa: BLE001 - a crash is a failed composition, reported with its cause
        for c in clauses:
            report.results[c] = ("failed", f"expected {names[0]} and {names[1]} to train together; "
                                           f"raised {type(e).__name__}: {e}")
        if raise_on_failure:
            raise PluginContractError(report)
        return report

    def run_clause(clause, fn):
        if clause not in clauses:
            return
        try:
            report.results[clause] = fn()
        except Exception as e:  # noqa: BLE001
            report.results[clause] = ("failed", f"expected to run; raised {type(e).__name__}: {e}")

    def own_terms():
        problems, checked, skipped = [], 0, []
        for k in (0, 1):
            partner = factories[1 - k]()
            if getattr(partner, "modifies_model", False):
                skipped.append(f"{names[1 - k]} changes the model before the first step (by design)")
                continue
            reads = getattr(factories[k](), "terms_read_roles", {})
            why = next((w for r, w in reads.items() if r in getattr(partner, "roles", ())), None)
            if why is not None:
                skipped.append(f"{names[k]}'s terms depend on {names[1 - k]} by design: {why}")
                continue
            alone = _alone(factories[k], model_factory, "ci-64", stream, seed)
            first = _first_terms(alone, 0)
            if first is None:
                continue
            exp, it, x, terms = first
            for order in ((0, 1), (1, 0)):
                pos = order.index(k)
                if exp == 0:
                    probe = runs[order][2]
                else:  # the partner joins when this plugin starts adding terms: same state up to then
                    join = [0, 0]
                    join[1 - pos] = exp
                    try:
                        probe = _compose_run([factories[j] for j in order], model_factory, stream, seed,
                                             join_at=join)[2]
                    except Exception as e:  # noqa: BLE001 - e.g. GEM / MAS need every experience's hooks
                        skipped.append(f"{names[1 - k]} cannot join at experience {exp} "
                                       f"({type(e).__name__}: {e}); compared only where both start together")
                        continue
                rec = next((r for r in probe.iterations if r["exp"] == exp and r["iter"] == it), None)
                if rec is None or rec["x"] != x:
                    continue  # the partner changes the minibatch (replay): no common minibatch to compare on
                got = rec["terms"].get(pos, {})
                checked += 1
                for name, value in terms.items():
                    if name not in got or not math.isclose(got[name], value, rel_tol=1e-5, abs_tol=1e-7):
                        problems.append(f"{names[k]}'s term {name!r} is {got.get(name)} next to {names[1 - k]} "
                                        f"(order {[names[j] for j in order]}) but {value} alone")
        if problems:
            return "failed", "; ".join(problems[:3])
        if checked:
            return "passed", "; ".join(skipped)
        return "skipped", "; ".join(skipped) or "no ledger terms to compare on a common minibatch"

    def optimizer():
        errs = [e for order in runs for e in runs[order][2].optimizer_errors]
        if errs:
            return "failed", f"{names[0]} + {names[1]}: " + "; ".join(sorted(set(errs))[:3])
        return "passed", ""

    def taps():
        errs = [f"order {[names[j] for j in order]}: {e}" for order in runs for e in runs[order][2].tap_errors]
        if errs:
            return "failed", "; ".join(errs[:2])
        return "passed", ""

    def round_trip():
        s, plugins, probe, saved = runs[(0, 1)]
        stateless = [n for n, p in zip(names, plugins) if not hasattr(p, "state_dict")]
        if stateless:
            return "skipped", f"{', '.join(stateless)} has no state_dict (its own check_plugin reports it)"
        n0 = sum(1 for r in probe.iterations if r["exp"] == 0)
        expected = probe.losses[n0:]
        saved.seek(0)
        state = torch.load(saved, weights_only=True)
        torch.manual_seed(seed + 1)
        got = _compose_run(factories, model_factory, stream, seed, resume=state)[2].losses
        if got != expected:
            i = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            return "failed", (f"{names[0]} + {names[1]}: the resumed run's losses differ from the uninterrupted "
                              f"run's at iteration {i}: {got[i] if i < len(got) else None} vs "
                              f"{expected[i] if i < len(expected) else None}")
        return "passed", ""

    def seeded():
        again = _compose_run(factories, model_factory, stream, seed)[2].losses
        first = runs[(0, 1)][2].losses
        if again != first:
            return "failed", f"{names[0]} + {names[1]}: two runs with seed {seed} give different losses"
        return "passed", ""

    run_clause("own-terms", own_terms)
    run_clause("optimizer", optimizer)
    run_clause("taps-current", taps)
    run_clause("state-round-trip", round_trip)
    run_clause("seeded", seeded)
    if raise_on_failure and report.failed:
        raise PluginContractError(report)
    return report
