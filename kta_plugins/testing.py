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

__all__ = ["check_plugin", "PluginContractError", "ContractReport", "CLAUSES", "tiny_streams"]

CLAUSES = (
    "trains", "eval-is-pure", "frozen-out-of-optimizer", "state-round-trip", "seeded",
    "hooks-accept-kwargs", "argument-errors",
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
def tiny_streams() -> dict:
    """Tiny class-, task- and domain-incremental streams (4 digit classes, 2 experiences)."""
    from scenarios.datasets import TensorClassificationDataset, digits
    from scenarios.shifts import Identity, Permutation
    from scenarios.streams import class_incremental, domain_incremental, task_incremental

    train, test = digits(seed=0)

    def small(ds, n):
        keep = torch.nonzero(ds.y < 4).flatten()[:n]
        return TensorClassificationDataset(ds.x[keep], ds.y[keep])

    pair = (small(train, 240), small(test, 120))
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
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.templates import SupervisedTemplate

    from scenarios.loaders import TensorBatchLoader, tensor_view

    recorder = _LossRecorder()

    class _Tiny(SupervisedTemplate):
        """Avalanche's template with a seeded tensor loader (kta_plugins may not import strategies)."""

        def make_train_dataloader(self, shuffle=True, **kw):
            fields = tensor_view(self.adapted_dataset)
            if fields is None:
                return super().make_train_dataloader(shuffle=shuffle, **kw)
            self.dataloader = TensorBatchLoader(fields, self.train_mb_size, shuffle, self._gen)

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = _Tiny(model=model, optimizer=opt, train_mb_size=32, train_epochs=1, eval_mb_size=128,
                  plugins=[plugin, recorder], evaluator=EvaluationPlugin(loggers=[]))
    s._gen = torch.Generator().manual_seed(seed)
    return s, recorder


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


_CHECKS = {
    "trains": _clause_trains, "eval-is-pure": _clause_eval_pure, "frozen-out-of-optimizer": _clause_frozen,
    "state-round-trip": _clause_round_trip, "seeded": _clause_seeded, "hooks-accept-kwargs": _clause_kwargs,
    "argument-errors": _clause_arguments,
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
