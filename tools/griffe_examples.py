"""A Griffe extension for the documentation site: ``Example:`` sections are examples.

KTA's docstrings follow Google style with a singular ``Example:`` heading;
Griffe's Google parser only knows the plural ``Examples:`` and would render the
doctest lines as plain Markdown. Loaded by mkdocs.yml (mkdocstrings'
``extensions`` option); the code is not changed.
"""
from __future__ import annotations

import re

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", re.M)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` to ``Examples:`` in every docstring before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
