"""Name registries for the command line, and the scenarios' own names.

``Registry`` maps command-line names to factories and turns ``key=value``
strings into typed keyword arguments using the factory's signature (its type
annotations, or the type of its default). The class lives here, in the bottom
package, so that ``kta_plugins`` (plugins) and ``strategies`` (strategies) keep
their own registries without importing each other.
"""
from __future__ import annotations

import ast
import inspect
import types
import typing
from typing import Any, Callable, Optional

__all__ = ["Registry", "RegistryError", "SCENARIOS", "register_scenario", "parse_spec", "load_all"]


class RegistryError(ValueError):
    """An unknown name or a bad ``key=value`` option."""


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (p.strip() for p in parts) if p]


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"name:k=v,k2=v2"`` -> ``("name", {"k": "v", "k2": "v2"})`` (values stay strings)."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise RegistryError(f"empty name in {spec!r}")
    raw = {}
    for item in _split_top(rest):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise RegistryError(f"{name}: expected key=value, got {item!r}")
        raw[key.strip()] = value.strip()
    return name, raw


_BOOLS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _convert(value: str, annotation: Any, default: Any):
    """Convert a command-line string to the parameter's type; raise ValueError when it cannot."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        annotation = type(default) if default not in (None, inspect.Parameter.empty) else None
    if annotation is None:
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value.lower() == "none" and type(None) in args:
            return None
        errors = []
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _convert(value, arm, inspect.Parameter.empty)
            except (ValueError, TypeError) as e:
                errors.append(str(e))
        raise ValueError(f"expected {_type_name(annotation)}, got {value!r}")
    if origin is typing.Literal:
        for choice in typing.get_args(annotation):
            if str(choice) == value:
                return choice
        raise ValueError(f"expected one of {list(typing.get_args(annotation))}, got {value!r}")
    if annotation is bool:
        if value.lower() not in _BOOLS:
            raise ValueError(f"expected a boolean (true/false), got {value!r}")
        return _BOOLS[value.lower()]
    if annotation in (int, float):
        try:
            return annotation(value) if annotation is float else int(value, 10)
        except ValueError:
            raise ValueError(f"expected {annotation.__name__}, got {value!r}") from None
    if annotation is str:
        return value
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple) or origin is not None and \
            getattr(origin, "__name__", "") in ("Sequence", "Iterable"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"expected {_type_name(annotation)} such as [1,2], got {value!r}") from None
        if not isinstance(parsed, (list, tuple)):
            raise ValueError(f"expected {_type_name(annotation)} such as [1,2], got {value!r}")
        return list(parsed)
    # Anything else (a module, a tensor ...): accept Python literals or the raw string.
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _same_definition(a, b) -> bool:
    """True when ``b`` is ``a`` defined again (the same file imported twice)."""
    def source(obj):
        code = getattr(obj, "__code__", None)
        if code is None and inspect.isclass(obj):  # a class: the file of its first method
            code = next((v.__code__ for v in vars(obj).values() if hasattr(v, "__code__")), None)
        return code.co_filename if code is not None else None

    return getattr(a, "__qualname__", 1) == getattr(b, "__qualname__", 2) and source(a) is not None \
        and source(a) == source(b)


class Registry:
    """Maps command-line names to factories (classes or functions).

    Example:
        >>> PLUGINS = Registry("plugin")
        >>> @PLUGINS.register("my-reg")
        ... class MyReg: ...
        >>> PLUGINS.build("my-reg:strength=0.1")
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, factory: Optional[Callable] = None, *, help: str = ""):
        """Register ``factory`` under ``name``; usable as a decorator."""
        if not isinstance(name, str) or not name or any(c in name for c in ":,= "):
            raise ValueError(f"{self.kind} name must be a non-empty string without ':', ',', '=' or spaces, got {name!r}")

        def deco(f):
            if name in self._entries and self._entries[name] is not f and not _same_definition(self._entries[name], f):
                raise ValueError(f"{self.kind} name {name!r} is already registered to {self._entries[name]!r}")
            self._entries[name] = f
            doc = (inspect.getdoc(f) or "").split("\n\n")[0].replace("\n", " ")
            if len(doc) > 100:
                doc = doc[:97].rsplit(" ", 1)[0] + "..."
            self._help[name] = help or doc
            return f

        return deco if factory is None else deco(factory)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self):
        return sorted(self._entries.items())

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def get(self, name: str) -> Callable:
        if name not in self._entries:
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def signature(self, name: str) -> dict[str, inspect.Parameter]:
        f = self.get(name)
        target = f.__init__ if inspect.isclass(f) else f
        sig = inspect.signature(target)
        try:
            hints = typing.get_type_hints(target)
        except Exception:
            hints = {}
        params = {}
        for p in sig.parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            params[p.name] = p.replace(annotation=hints.get(p.name, p.annotation))
        return params

    def parse_kwargs(self, name: str, raw: dict[str, str]) -> dict[str, Any]:
        """Type-check ``raw`` string options against ``name``'s signature."""
        params = self.signature(name)
        out = {}
        for key, value in raw.items():
            if key not in params:
                raise RegistryError(
                    f"{self.kind} {name!r} has no option {key!r}; options: {', '.join(params) or '(none)'}"
                )
            p = params[key]
            try:
                out[key] = _convert(value, p.annotation, p.default)
            except (ValueError, TypeError) as e:
                raise RegistryError(f"{self.kind} {name!r}: option {key!r}: {e}") from None
        return out

    def build(self, spec: str, **extra):
        """Build from ``"name:k=v,..."``; ``extra`` keyword arguments are added (spec wins)."""
        name, raw = parse_spec(spec)
        kwargs = {**extra, **self.parse_kwargs(name, raw)}
        try:
            return self.get(name)(**kwargs)
        except (ValueError, TypeError, ImportError) as e:  # ImportError: an optional dependency is missing
            raise RegistryError(f"{self.kind} {name!r}: {e}") from e


SCENARIOS = Registry("scenario")
register_scenario = SCENARIOS.register


def _register_builtin_scenarios():
    from . import shifts
    from .datasets.local import train_test_pair
    from .streams import class_incremental, domain_incremental, offline, task_incremental

    @register_scenario("split-digits")
    def split_digits(n_experiences: int = 5, seed: int = 0):
        """scikit-learn digits, 5 experiences of 2 new classes (class-incremental)."""
        return class_incremental("digits", n_experiences=n_experiences, seed=seed)

    @register_scenario("split-mnist1d")
    def split_mnist1d(n_experiences: int = 5, seed: int = 0):
        """MNIST-1D, 5 experiences of 2 new classes (class-incremental)."""
        return class_incremental("mnist1d", n_experiences=n_experiences, seed=seed)

    @register_scenario("split-digits-tasks")
    def split_digits_tasks(n_experiences: int = 5, seed: int = 0):
        """scikit-learn digits, 5 experiences of 2 classes, task label = experience (task-incremental)."""
        return task_incremental("digits", n_experiences=n_experiences, seed=seed)

    @register_scenario("permuted-digits")
    def permuted_digits(n_experiences: int = 5, seed: int = 0):
        """scikit-learn digits, the first experience unpermuted, then a new pixel permutation each (domain-incremental)."""
        if n_experiences < 1:
            raise ValueError(f"n_experiences must be >= 1, got {n_experiences}")
        s = [shifts.Identity()] + [shifts.Permutation(seed=1000 * seed + i) for i in range(1, n_experiences)]
        return domain_incremental("digits", s, seed=seed)

    @register_scenario("rotated-digits")
    def rotated_digits(n_experiences: int = 5, max_degrees: float = 90.0, seed: int = 0):
        """scikit-learn digits rotated by evenly spaced angles from 0 to max_degrees (domain-incremental)."""
        if n_experiences < 1:
            raise ValueError(f"n_experiences must be >= 1, got {n_experiences}")
        step = max_degrees / max(n_experiences - 1, 1)
        return domain_incremental("digits", [shifts.Rotation(i * step) for i in range(n_experiences)], seed=seed)

    @register_scenario("offline")
    def offline_dataset(dataset: str = "digits", seed: int = 0):
        """One experience with the whole dataset (digits or mnist1d): ordinary offline training."""
        return offline(dataset, seed=seed)

    @register_scenario("split-torchvision")
    def split_torchvision(
        dataset: str = "mnist",
        root: str = "",
        n_experiences: int = 5,
        verify: bool = True,
        download: bool = False,
        seed: int = 0,
    ):
        """A local torchvision dataset (mnist, cifar10, ...) split into experiences of new classes (class-incremental)."""
        pair = train_test_pair(dataset, root, verify=verify, download=download, seed=seed)
        return class_incremental(pair, n_experiences=n_experiences, seed=seed)


_register_builtin_scenarios()


def load_all() -> None:
    """Import every module of ``scenarios`` so that scenarios defined elsewhere register."""
    import importlib
    import pkgutil
    from pathlib import Path

    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.name not in ("registry",):
            importlib.import_module(f"scenarios.{mod.name}")
