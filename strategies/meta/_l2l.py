"""learn2learn, imported without gym's start-up notice, and optional.

``import learn2learn`` imports gym 0.26, which prints an unconditional
"Gym has been unmaintained" notice to stderr on import; KTA uses none of gym,
so that notice is swallowed here (only during this import).

learn2learn is an optional dependency (the ``meta`` extra): without it every
other part of KTA works, the meta strategies still register (``kta list``
shows them with :data:`INSTALL_HINT`), and building one raises
``ModuleNotFoundError`` with :data:`INSTALL_HINT`.
"""
import contextlib
import io

#: What to do when learn2learn is missing.
INSTALL_HINT = (
    "the meta-learning strategies need learn2learn, which is not installed: install KTA with its `meta` extra "
    "(pip install -e '.[meta]'; tools/setup_venv.sh builds learn2learn 0.2.0 for Python 3.11)"
)


class _Missing:
    """Stands in for the learn2learn module when it cannot be imported; any use raises with the hint."""

    def __init__(self, error: ImportError):
        self.error = error

    def __getattr__(self, name):
        raise ModuleNotFoundError(INSTALL_HINT) from self.error


try:
    with contextlib.redirect_stderr(io.StringIO()):
        import learn2learn as l2l  # noqa: E402
except ImportError as e:  # optional dependency
    l2l = _Missing(e)


def available() -> bool:
    """True when learn2learn can be imported."""
    return not isinstance(l2l, _Missing)


def require() -> None:
    """Raise ``ModuleNotFoundError`` with :data:`INSTALL_HINT` when learn2learn is missing."""
    if not available():
        raise ModuleNotFoundError(INSTALL_HINT) from l2l.error


__all__ = ["l2l", "available", "require", "INSTALL_HINT"]
