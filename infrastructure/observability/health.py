"""Whether the worker's dependencies answer: the saga store and the broker.

An outage must be visible while it lasts, not only in a line when a loop gives up:
a 20 s PostgreSQL outage used to log nothing. :class:`DependencyHealth` keeps one
state per dependency; the first failure is logged at warning (``store unreachable:
…``), then again every ``log_interval`` seconds while it lasts (``store still
unreachable after 40s: …``), and once more when it answers again. The same states
are served as JSON on ``/health`` beside ``/metrics`` (200 when everything answers,
503 naming what does not).

The worker probes each dependency on a thread of its own (:func:`probe_store`, and
the reply consumer's connection or a fresh one for the broker), so a probe that
hangs never holds up the timers, the relay or the projections.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sagalog.domain import SagalogError
from sagalog.domain.errors import first_line
from sagalog.process.store.url import DatabaseUrl

__all__ = [
    "DependencyHealth",
    "DependencyState",
    "StoreUnreachableError",
    "preflight_store",
    "probe_store",
]

logger = logging.getLogger("sagalog.health")

#: Seconds a probe of the store may take to connect before it counts as down.
PROBE_TIMEOUT = 3


@dataclass
class DependencyState:
    """One dependency: up or down, since when, and the last error."""

    name: str
    up: bool = True
    since: datetime | None = None
    error: str | None = None
    #: When the outage was last logged (monotonic seconds), while it lasts.
    logged_at: float = 0.0
    #: When the outage began (monotonic seconds).
    down_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "up": self.up,
            "since": None if self.since is None else self.since.isoformat(),
            "error": self.error,
        }


class DependencyHealth:
    """Up/down states of named dependencies, with the outage logs described above."""

    def __init__(
        self, *, log_interval: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if log_interval <= 0:
            raise ValueError("log_interval must be positive")
        self.log_interval = log_interval
        self._clock = clock
        self._states: dict[str, DependencyState] = {}
        self._lock = threading.Lock()

    def watch(self, name: str) -> None:
        """Start reporting ``name`` (up until a probe says otherwise)."""
        with self._lock:
            self._states.setdefault(name, DependencyState(name, since=datetime.now(UTC)))

    def down(self, name: str, error: str) -> None:
        """``name`` failed to answer: log when it starts, then every ``log_interval``."""
        now = self._clock()
        with self._lock:
            state = self._states.setdefault(name, DependencyState(name))
            state.error = error
            if state.up:
                state.up, state.since, state.down_at, state.logged_at = (
                    False,
                    datetime.now(UTC),
                    now,
                    now,
                )
                logger.warning("%s unreachable: %s", name, error, extra={"dependency": name})
            elif now - state.logged_at >= self.log_interval:
                state.logged_at = now
                logger.warning(
                    "%s still unreachable after %.0fs: %s",
                    name,
                    now - state.down_at,
                    error,
                    extra={"dependency": name},
                )

    def up(self, name: str) -> None:
        """``name`` answered: log the end of an outage."""
        now = self._clock()
        with self._lock:
            state = self._states.setdefault(name, DependencyState(name, since=datetime.now(UTC)))
            if not state.up:
                logger.warning(
                    "%s reachable again after %.0fs",
                    name,
                    now - state.down_at,
                    extra={"dependency": name},
                )
                state.up, state.since, state.error = True, datetime.now(UTC), None

    @property
    def healthy(self) -> bool:
        """Whether every watched dependency answers."""
        with self._lock:
            return all(state.up for state in self._states.values())

    def report(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded", "down": [...], "dependencies": {...}}``."""
        with self._lock:
            states = {name: state.to_json() for name, state in sorted(self._states.items())}
        down = [name for name, state in states.items() if not state["up"]]
        return {"status": "degraded" if down else "ok", "down": down, "dependencies": states}


def probe_store(url: DatabaseUrl) -> None:
    """Raise if the saga store does not answer a trivial query within a few seconds.

    PostgreSQL: a fresh connection with ``connect_timeout`` (a pool would wait for
    its own timeout, 30 s, and a broken pooled connection proves little). SQLite: the
    file opens and answers. ``memory://`` is always up.
    """
    if url.kind == "postgresql":
        import psycopg

        with psycopg.connect(url.conninfo(), connect_timeout=PROBE_TIMEOUT) as conn:
            conn.execute("SELECT 1")
    elif url.kind == "sqlite" and not url.is_sqlite_memory:
        assert url.path is not None
        connection = sqlite3.connect(f"file:{url.path}?mode=ro", uri=True, timeout=PROBE_TIMEOUT)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()


class StoreUnreachableError(SagalogError):
    """The saga store cannot be used: wrong password, unknown role, not a database, …"""


def preflight_store(url: DatabaseUrl) -> None:
    """Fail fast, in one line naming the cause, if the saga store cannot be opened.

    Opening a store through its connection pool waits for the pool's timeout (30 s)
    and then says only that it "couldn't get a connection"; a wrong password or a
    file that is not a database deserve their own words, at once. A store that does
    not exist yet (a new SQLite file) passes: it is created when opened.
    """
    if url.kind == "sqlite" and not url.is_sqlite_memory:
        assert url.path is not None
        if not Path(url.path).exists():
            return
    try:
        probe_store(url)
    except sqlite3.DatabaseError as exc:
        raise StoreUnreachableError(f"{url.path} is not a sagalog database ({exc})") from None
    except Exception as exc:
        cause = first_line(exc).removeprefix("connection failed: ")
        raise StoreUnreachableError(f"cannot reach database {url.masked}: {cause}") from None
