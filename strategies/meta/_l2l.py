"""learn2learn, imported without gym's start-up notice.

``import learn2learn`` imports gym 0.26, which prints an unconditional
"Gym has been unmaintained" notice to stderr on import; KTA uses none of gym,
so that notice is swallowed here (only during this import).
"""
import contextlib
import io

with contextlib.redirect_stderr(io.StringIO()):
    import learn2learn as l2l  # noqa: E402

__all__ = ["l2l"]
