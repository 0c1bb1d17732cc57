"""One vocabulary: every registered KTA plugin's arguments follow the table in docs/design.md.

The test reads the two tables of docs/design.md ("One vocabulary" and its
"Exceptions"). An argument named like a word of the table's last column (a
synonym of a vocabulary word, e.g. ``alpha`` or ``strength`` for a loss weight)
must be listed as an exception, with a reason, and be described in the
plugin's docstring; every exception must still exist.
"""
from __future__ import annotations

import fnmatch
import inspect
import re
from pathlib import Path

import pytest

from kta_plugins.base import KTAPlugin
from kta_plugins.registry import PLUGINS, load_all

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"


def _table_after(text: str, heading: str) -> list[list[str]]:
    """Rows (cells, stripped) of the first Markdown table after ``heading``."""
    start = text.index(heading)
    rows, started = [], False
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            started = True
            if not re.fullmatch(r"[|:\- ]+", line.strip()):  # not the |---|---| line
                rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif started:
            break
    return rows[1:]  # without the header


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _vocabulary():
    text = DESIGN.read_text()
    vocab = _table_after(text, "## One vocabulary")
    synonyms = {}
    for word, meaning, others in vocab:
        assert _names(word) and meaning, f"vocabulary row without word or meaning: {word!r}"
        for other in _names(others):
            synonyms[other] = _names(word)[0]
    exceptions = {}
    for plugin, arg, reason in _table_after(text, "### Exceptions"):
        exceptions[(_names(plugin)[0], _names(arg)[0])] = reason
    return synonyms, exceptions


def _kta_plugins():
    load_all()
    out = {}
    for name in PLUGINS.names():
        factory = PLUGINS.get(name)
        # KTA's own plugins; users' plugins registered by other tests (examples/my_plugin.py) are theirs
        if inspect.isclass(factory) and issubclass(factory, KTAPlugin) and factory.__module__.startswith("kta_plugins."):
            out[name] = factory
    return out


def _docstrings(cls) -> str:
    parts = []
    for klass in cls.__mro__:
        if klass is KTAPlugin:
            break
        parts += [klass.__doc__ or "", getattr(klass.__init__, "__doc__", None) or ""]
    return "\n".join(parts)


def test_the_tables_are_there():
    synonyms, exceptions = _vocabulary()
    assert synonyms["alpha"] == "weight" and synonyms["T"] == "temperature"
    assert exceptions[("kd", "alpha")]
    assert len(_kta_plugins()) >= 30  # the KTA plugins are found (Avalanche's own are not KTAPlugins)


def _violations(arguments: dict, synonyms: dict, exceptions: dict) -> list[str]:
    """``arguments``: plugin name -> argument names."""
    bad = []
    for name, args in arguments.items():
        for arg in args:
            hits = [word for pattern, word in synonyms.items() if fnmatch.fnmatchcase(arg, pattern)]
            if hits and (name, arg) not in exceptions:
                bad.append(f"{name}: argument {arg!r} is a synonym of {hits[0]!r}")
    return bad


def test_the_check_catches_synonyms():
    synonyms, exceptions = _vocabulary()
    made_up = {"my-kd": ["teacher", "T", "alpha"], "my-reg": ["strength", "distance_weight"], "kd": ["alpha"]}
    assert _violations(made_up, synonyms, exceptions) == [
        "my-kd: argument 'T' is a synonym of 'temperature'", "my-kd: argument 'alpha' is a synonym of 'weight'",
        "my-reg: argument 'strength' is a synonym of 'weight'",
        "my-reg: argument 'distance_weight' is a synonym of 'weight'",
    ]


def test_every_kta_plugin_argument_follows_the_vocabulary():
    synonyms, exceptions = _vocabulary()
    bad = _violations({name: list(PLUGINS.signature(name)) for name in _kta_plugins()}, synonyms, exceptions)
    assert not bad, ("rename these arguments, or list them with a reason under 'Exceptions' in docs/design.md:\n"
                     + "\n".join(bad))


@pytest.mark.parametrize("row", sorted(_vocabulary()[1]), ids=lambda r: f"{r[0]}.{r[1]}")
def test_every_exception_exists_and_is_documented(row):
    name, arg = row
    synonyms, exceptions = _vocabulary()
    plugins = _kta_plugins()
    assert name in plugins, f"docs/design.md lists an exception for {name!r}, which is not a registered KTA plugin"
    assert arg in PLUGINS.signature(name), f"{name} has no argument {arg!r} any more: remove its exception row"
    assert len(exceptions[row]) > 10, f"{name}.{arg}: give a reason"
    assert re.search(rf"\b{re.escape(arg)}\b", _docstrings(plugins[name])), \
        f"{name}.{arg} is an exception: its docstring must describe it"


def test_teacher_layer_never_defaults_to_a_module_name():
    # None means "required when the architectures differ" (checked at the first step); a fixed
    # default would silently tap another layer of a different teacher.
    for name, factory in _kta_plugins().items():
        params = PLUGINS.signature(name)
        if "teacher_layer" in params:
            assert params["teacher_layer"].default is None, name


@pytest.mark.parametrize("name, old", [("attention", "beta"), ("fitnets", "beta"), ("pkt", "beta"), ("rkd", "beta"),
                                       ("soft-sharing", "strength")])
def test_renamed_arguments_are_deprecated_aliases_of_weight(name, old):
    """The old name still works for one release: same value, a DeprecationWarning naming ``weight``;
    errors name the argument the user wrote; giving both is an error."""
    factory = PLUGINS.get(name)
    with pytest.warns(DeprecationWarning, match=rf"{old}=.*deprecated: use weight="):
        plugin = factory(**{old: 0.25})
    assert plugin.weight == 0.25
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=rf"^{old} must be >= 0"):
        factory(**{old: -1.0})
    with pytest.raises(ValueError, match=rf"{old}: a deprecated alias of weight"):
        factory(**{old: 0.25, "weight": 0.5})
