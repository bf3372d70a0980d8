"""Closing saga managers before the interpreter tears its modules down.

A manager left open (or held by a stopped eventsourcing runner) used to be closed
by ``Application.__del__`` at interpreter exit, after the modules it needs were
torn down, printing ``Exception ignored in: <function Application.__del__>`` (and,
on PostgreSQL, ``PostgresDatastore.__del__``). Managers register here when built;
an ``atexit`` hook closes those still open while everything is intact, and a
closed manager's finalizers do nothing.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any

__all__ = ["ClosedAtExit"]

_open: weakref.WeakSet[ClosedAtExit] = weakref.WeakSet()
_lock = threading.Lock()


class ClosedAtExit:
    """Mixin for an eventsourcing ``Application``: close once, at the latest at exit, quietly."""

    def _close_at_exit(self) -> None:
        """Call at the end of ``__init__``: close this application at exit if still open."""
        with _lock:
            _open.add(self)

    def close(self) -> None:
        """Close the application's connections (again: nothing happens)."""
        if self.__dict__.get("_sagalog_closed", False):
            return
        self._sagalog_closed = True
        with _lock:
            _open.discard(self)
        super().close()  # type: ignore[misc]
        _quiet_datastore(self)

    def __del__(self) -> None:
        if not self.__dict__.get("_sagalog_closed", False):
            # Not contextlib.suppress: at exit that module may be torn down already.
            try:  # noqa: SIM105
                self.close()
            except Exception:
                pass


def _quiet_datastore(app: Any) -> None:
    """Make the closed datastore's own finalizer a no-op (it would close it again at exit)."""
    datastore = getattr(getattr(app, "factory", None), "datastore", None)
    if datastore is None:
        return
    quiet = _QUIET.get(type(datastore))
    if quiet is None:
        base = type(datastore)
        quiet = type(f"Closed{base.__name__}", (base,), {"__del__": _no_op, "close": _no_op_close})
        _QUIET[base] = quiet
    try:
        datastore.__class__ = quiet
    except TypeError:  # a datastore class whose layout forbids it: leave it as it is
        return


def _no_op(self: Any) -> None:
    return None


def _no_op_close(self: Any) -> None:
    return None


_QUIET: dict[type[Any], type[Any]] = {}


@atexit.register
def _close_all() -> None:
    with _lock:
        still_open = list(_open)
    for app in still_open:
        try:
            app.close()
        except Exception:  # exiting: nothing to report to
            continue
