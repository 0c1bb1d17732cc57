"""Compare configs (and ``kta run --config`` files): YAML with line numbers, every key checked.

A compare config::

    seeds: [0, 1, 2]
    scenarios: [split-digits, "split-mnist1d:n_experiences=5"]
    settings: {epochs: 1, lr: 0.1, batch_size: 16}    # defaults for every strategy (optional)
    strategies:
      - {name: naive, strategy: naive}
      - {name: replay, strategy: naive, plugins: ["replay:mem_size=200"]}
      - {name: adam, strategy: naive, optimizer: adam, lr: 0.001}   # an entry may override settings

Label-free model selection (domain adaptation): entries with the same ``group: NAME`` are one
method's grid, and a top-level ``select: CRITERION`` (one of
:data:`kta_plugins.adapt.select.CRITERIA`) scores every grouped run after training with
held-out labeled source data and unlabeled target inputs only; the report picks each group's
entry by that score next to the target-label oracle. Every scenario must then be a
source-target scenario with a held-out source split (``"digits-to-blurred:val_fraction=0.2"``)::

    select: dev
    scenarios: ["digits-to-blurred:val_fraction=0.2"]
    strategies:
      - {name: dann-0.1, group: dann, strategy: "domain-adaptation:method=dann,weight=0.1"}
      - {name: dann-1, group: dann, strategy: "domain-adaptation:method=dann,weight=1"}

A run config (``kta run --config run.yaml``) holds the keys of one entry plus
``scenario`` and ``seed``::

    scenario: split-digits
    strategy: naive
    plugins: ["replay:mem_size=200"]
    seed: 0
    epochs: 1

Errors are collected, not raised at the first: :class:`ConfigError` lists
every one as ``file:line: key: message``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..runs import (SETTINGS, SettingError, check_device, check_seed, check_settings, model_names, registries,
                    safe_name)

__all__ = ["ConfigError", "Config", "RunSpec", "load_config", "load_run_config", "parse_yaml", "RUN_KEYS",
           "ENTRY_KEYS", "TOP_KEYS"]

TOP_KEYS = {"seeds": list, "scenarios": list, "strategies": list, "settings": dict, "output": str, "select": str}
ENTRY_KEYS = {"name": str, "strategy": str, "plugins": list, "group": str}
RUN_KEYS = {"name": str, "scenario": str, "strategy": str, "plugins": list, "seed": int}


class ConfigError(ValueError):
    """Bad config values; ``errors`` holds one line per error (``file:line: key: message``)."""

    def __init__(self, errors):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


class LineDict(dict):
    """A YAML mapping that knows the line of each key (``lines``) and its own (``line``)."""
    lines: dict = {}
    line: int = 0


class LineList(list):
    """A YAML sequence that knows the line of each item (``lines``) and its own (``line``)."""
    lines: list = []
    line: int = 0


def parse_yaml(text: str):
    """``yaml.safe_load`` that also records the line of every mapping key and sequence item (1-based)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
        out = LineDict(mapping)
        out.lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}
        out.line = node.start_mark.line + 1
        return out

    def construct_sequence(loader, node, deep=False):
        out = LineList(yaml.SafeLoader.construct_sequence(loader, node, deep=True))
        out.lines = [n.start_mark.line + 1 for n in node.value]
        out.line = node.start_mark.line + 1
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    return yaml.load(text, Loader=Loader)  # SafeLoader underneath: no arbitrary objects


def _read(path) -> tuple[Path, object]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = parse_yaml(path.read_text())
    except Exception as e:  # yaml errors carry their own position
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    return path, data


@dataclass(frozen=True)
class RunSpec:
    """One run of a compare config. ``digest`` (the hash of the resolved settings, see
    :func:`strategies.runs.run_hash`) is filled in by :func:`strategies.compare.prepare`."""
    scenario: str
    name: str
    strategy: str
    plugins: tuple
    seed: int
    settings: tuple  # sorted (key, value) pairs
    digest: str = ""
    resolved: str = ""  # the resolved settings as JSON (a string keeps the spec hashable)
    group: str = ""  # the entry's ``group`` (one method's grid), "" when none
    score: bool = False  # compute the label-free selection scores after training (``select`` is set)

    @property
    def run_id(self) -> str:
        base = safe_name(f"{self.scenario}__{self.name}__seed{self.seed}")
        return f"{base}__{self.digest}" if self.digest else base


@dataclass
class Config:
    path: Path
    seeds: list
    scenarios: list
    strategies: list
    settings: dict = field(default_factory=dict)
    output: Optional[str] = None
    where: dict = field(default_factory=dict)  # key -> "file:line: key" for error messages
    select: Optional[str] = None  # the label-free selection criterion, None: no selection

    def entry_settings(self, i: int) -> dict:
        st = self.strategies[i]
        return {**self.settings, **{k: st[k] for k in SETTINGS if k in st}}

    def runs(self) -> list[RunSpec]:
        return [
            RunSpec(sc, st["name"], st["strategy"], tuple(st.get("plugins", [])), seed,
                    tuple(sorted(self.entry_settings(i).items())), **self.selection(i))
            for sc in self.scenarios for i, st in enumerate(self.strategies) for seed in self.seeds
        ]

    def selection(self, i: int) -> dict:
        """``group`` and ``score`` of entry ``i``'s runs (scored when ``select`` is set and it has a group)."""
        group = self.strategies[i].get("group", "")
        return {"group": group, "score": bool(self.select and group)}

    def locate(self, key: str, i: Optional[int] = None, k: Optional[int] = None) -> str:
        """Where a run key (``scenario``, ``strategy``, ``plugins[j]``, a setting, ``seed``) of entry
        ``i`` on scenario ``k`` is written in the file."""
        if key == "scenario":
            return self.where.get(f"scenarios[{k}]", str(self.path))
        if key == "seed":
            return self.where.get("seeds", str(self.path))
        if key == "strategy" or key.startswith("plugins"):
            return self.where.get(f"strategies[{i}].{key}", self.where.get(f"strategies[{i}]", str(self.path)))
        if i is not None and f"strategies[{i}].{key}" in self.where:
            return self.where[f"strategies[{i}].{key}"]
        return self.where.get(f"settings.{key}", self.where.get(f"strategies[{i}]", str(self.path)))


def _type_ok(value, typ) -> bool:
    if isinstance(value, bool):
        return typ is bool
    if typ is float:
        return isinstance(value, (int, float))
    return isinstance(value, typ)


def _check_settings_block(block: dict, where_of, errors: list) -> None:
    """Type and value checks of settings keys in ``block`` (a ``settings:`` mapping or an entry)."""
    for k in block:
        if k not in SETTINGS:
            continue
        typ = SETTINGS[k][0]
        v = block[k]
        if not (_type_ok(v, typ) or (k == "model" and v is None)):
            errors.append(f"{where_of(k)}: must be {typ.__name__}, got {type(v).__name__} {v!r}")
            continue
        try:
            check_settings({k: v}, device=False)
            if k == "model" and v is not None and v.partition(":")[0].strip() not in model_names():
                raise SettingError("model", f"unknown model {v.partition(':')[0]!r}; known: {', '.join(model_names())}")
        except SettingError as e:
            if e.key == k:
                errors.append(f"{where_of(k)}: {e}")


def _check_spec(reg, spec, loc: str, errors: list, kind: str) -> None:
    from scenarios.registry import RegistryError, parse_spec

    from ..runs import CLI_LIMITS

    if not isinstance(spec, str):
        errors.append(f"{loc}: must be a string like 'name:key=value', got {spec!r}")
        return
    try:
        name, raw = parse_spec(spec)
        reg.parse_kwargs(name, raw)
    except RegistryError as e:
        errors.append(f"{loc}: {' '.join(str(e).split())}")
        return
    if (kind, name) in CLI_LIMITS:
        errors.append(f"{loc}: {kind} {name!r} cannot run from the command line: {CLI_LIMITS[(kind, name)]}")


def _check_select(data, scenarios, loc: str, where: dict, errors: list) -> None:
    """``select``: a known criterion, at least one ``group``, and scenarios with a held-out source split."""
    from scenarios.registry import RegistryError, parse_spec

    from kta_plugins.adapt.select import CRITERIA

    crit = data["select"]
    if crit not in CRITERIA:
        errors.append(f"{loc}: unknown criterion {crit!r}; expected one of {', '.join(CRITERIA)}")
    if not any(isinstance(st, dict) and st.get("group") for st in data["strategies"]):
        errors.append(f"{loc}: needs at least one strategy entry with 'group: NAME' (the entries of a group "
                      "are one method's grid, among which the criterion picks)")
    for k, sc in enumerate(data["scenarios"]):
        if not isinstance(sc, str):
            continue
        try:
            name, raw = parse_spec(sc)
            params = scenarios.signature(name)
            value = scenarios.parse_kwargs(name, raw).get("val_fraction", params.get("val_fraction"))
        except (RegistryError, KeyError):
            continue  # reported by the scenario's own check
        example = f"'{name}:val_fraction=0.2'" if "val_fraction" in params else "'digits-to-blurred:val_fraction=0.2'"
        if "val_fraction" not in params:
            errors.append(f"{where[f'scenarios[{k}]']}: select: {name!r} is not a source-target scenario with a "
                          f"held-out source split (no val_fraction option); use one such as {example}")
        else:
            v = value.default if hasattr(value, "default") else value
            if not (isinstance(v, (int, float)) and v > 0):
                errors.append(f"{where[f'scenarios[{k}]']}: select: label-free selection needs a held-out labeled "
                              f"source split; add val_fraction, e.g. {example}")


def load_config(path) -> Config:
    """Read and check a compare config (keys, types, names, option names and values, settings);
    raise :class:`ConfigError` listing every error with its line. Builds nothing (see
    :func:`strategies.compare.prepare` for the dry build)."""
    path, data = _read(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping with keys {sorted(TOP_KEYS)}")
    errors: list = []
    where: dict = {}

    def at(key, line):
        where[key] = f"{path}:{line}: {key}"
        return where[key]

    for key in data:
        if key not in TOP_KEYS:
            errors.append(f"{at(key, data.lines.get(key, data.line))}: unknown key; expected one of {sorted(TOP_KEYS)}")
    for key in ("seeds", "scenarios", "strategies"):
        if key not in data:
            errors.append(f"{at(key, data.line)}: missing (required)")
    for key, typ in TOP_KEYS.items():
        if key in data and not isinstance(data[key], typ):
            errors.append(f"{at(key, data.lines[key])}: must be a {typ.__name__}, got {type(data[key]).__name__}")
    if errors:
        raise ConfigError(errors)
    for key in ("seeds", "scenarios", "strategies"):
        if not data[key]:
            errors.append(f"{at(key, data.lines[key])}: must not be empty")
    SCENARIOS, STRATEGIES, PLUGINS = registries()
    at("seeds", data.lines["seeds"])
    for i, seed in enumerate(data["seeds"]):
        try:
            check_seed(seed)
        except SettingError as e:
            errors.append(f"{at(f'seeds[{i}]', data['seeds'].lines[i])}: {e}")
    if len(set(map(repr, data["seeds"]))) != len(data["seeds"]):
        errors.append(f"{at('seeds', data.lines['seeds'])}: duplicate seeds")
    for i, sc in enumerate(data["scenarios"]):
        _check_spec(SCENARIOS, sc, at(f"scenarios[{i}]", data["scenarios"].lines[i]), errors, "scenario")
    settings = data.get("settings", LineDict())
    for k in settings:
        loc = at(f"settings.{k}", settings.lines.get(k, settings.line))
        if k not in SETTINGS:
            errors.append(f"{loc}: unknown setting; expected one of {sorted(SETTINGS)}")
    _check_settings_block(settings, lambda k: where[f"settings.{k}"], errors)
    names = set()
    entry_keys = {**ENTRY_KEYS, **{k: v[0] for k, v in SETTINGS.items()}}
    for i, st in enumerate(data["strategies"]):
        line = data["strategies"].lines[i]
        base = at(f"strategies[{i}]", line)
        if not isinstance(st, dict):
            errors.append(f"{base}: must be a mapping with keys name, strategy, plugins and settings keys")
            continue
        for k in st:
            loc = at(f"strategies[{i}].{k}", st.lines.get(k, line))
            if k not in entry_keys:
                errors.append(f"{loc}: unknown key; expected one of {sorted(entry_keys)}")
        for k in ("name", "strategy"):
            if k not in st:
                errors.append(f"{at(f'strategies[{i}].{k}', line)}: missing (required)")
        bad = False
        for k, typ in ENTRY_KEYS.items():
            if k in st and not isinstance(st[k], typ):
                errors.append(f"{where[f'strategies[{i}].{k}']}: must be a {typ.__name__}, got {type(st[k]).__name__}")
                bad = True
        if bad or "name" not in st or "strategy" not in st:
            continue
        if st["name"] in names:
            errors.append(f"{where[f'strategies[{i}].name']}: duplicate name {st['name']!r}")
        names.add(st["name"])
        _check_spec(STRATEGIES, st["strategy"], where[f"strategies[{i}].strategy"], errors, "strategy")
        for j, p in enumerate(st.get("plugins", [])):
            _check_spec(PLUGINS, p, at(f"strategies[{i}].plugins[{j}]", st["plugins"].lines[j]), errors, "plugin")
        _check_settings_block(st, lambda k: where[f"strategies[{i}].{k}"], errors)
    if "select" in data:
        _check_select(data, SCENARIOS, at("select", data.lines["select"]), where, errors)
    cfg = Config(path, list(data["seeds"]), list(data["scenarios"]),
                 [dict(s) for s in data["strategies"] if isinstance(s, dict)], dict(settings), data.get("output"),
                 where, data.get("select"))
    if not errors:  # the device once per distinct value (it needs torch)
        for i in range(len(cfg.strategies)):
            s = cfg.entry_settings(i)
            try:
                check_device(s.get("device", "cpu"))
            except SettingError as e:
                msg = f"{cfg.locate('device', i)}: {e}"
                if msg not in errors:
                    errors.append(msg)
    if errors:
        raise ConfigError(errors)
    return cfg


def load_run_config(path) -> tuple[dict, dict]:
    """Read a ``kta run --config`` file: ``(values, where)`` with ``where[key] = "file:line: key"``.
    Checks keys and types (values are checked with the command line's)."""
    path, data = _read(path)
    keys = {**RUN_KEYS, **{k: v[0] for k, v in SETTINGS.items()}}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a run config must be a mapping with keys from {sorted(keys)}")
    errors, where = [], {}
    for k, v in data.items():
        where[k] = f"{path}:{data.lines.get(k, data.line)}: {k}"
        if k not in keys:
            errors.append(f"{where[k]}: unknown key; expected one of {sorted(keys)}")
        elif not (_type_ok(v, keys[k]) or (k == "model" and v is None)):
            errors.append(f"{where[k]}: must be {keys[k].__name__}, got {type(v).__name__} {v!r}")
        elif k == "plugins" and not all(isinstance(p, str) for p in v):
            errors.append(f"{where[k]}: must be a list of 'name:key=value' strings")
    if errors:
        raise ConfigError(errors)
    values = {k: (list(v) if isinstance(v, list) else v) for k, v in data.items()}
    for j in range(len(values.get("plugins", []))):
        where[f"plugins[{j}]"] = f"{path}:{data['plugins'].lines[j]}: plugins[{j}]"
    return values, where
