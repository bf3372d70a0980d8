"""Helpers for the broker tests: threads that run consumers, bounded waits, rabbitmqctl."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable

import pytest


def rabbitmqctl(*args: str) -> list[str]:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return []
    done = subprocess.run([ctl, *args], check=False, capture_output=True, text=True, timeout=60)
    return done.stdout.splitlines()


def close_connections(name_prefix: str) -> int:
    """Make the broker close every connection whose name starts with ``name_prefix``.

    A real connection loss, caused by the broker (``rabbitmqctl close_connection``).
    Returns how many connections it closed.
    """
    closed = 0
    listed = rabbitmqctl("list_connections", "-q", "--no-table-headers", "pid", "client_properties")
    for line in listed:
        pid, _, props = line.partition("\t")
        if f'{{"connection_name","{name_prefix}' in props:
            rabbitmqctl("close_connection", pid.strip(), "sagalog test: simulated loss")
            closed += 1
    return closed


def wait_until(
    condition: Callable[[], bool], *, timeout: float = 20.0, message: str = "condition"
) -> None:
    """Poll ``condition`` until true; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    if condition():
        return
    pytest.fail(f"timed out after {timeout}s waiting for: {message}")


class Background:
    """Runs ``target(stop)`` callables in threads; stops and joins them on exit.

    An exception that ends a thread is kept in ``errors`` (by thread name) so the
    test can assert on it; on exit, threads are joined with a bounded wait.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: dict[str, BaseException] = {}

    def start(self, name: str, target: Callable[[threading.Event], object]) -> threading.Thread:
        def body() -> None:
            try:
                target(self.stop)
            except BaseException as exc:  # kept for the test to inspect
                self.errors[name] = exc

        thread = threading.Thread(target=body, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=20)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"background threads did not stop: {alive}"
