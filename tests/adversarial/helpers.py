"""Small helpers of the adversarial tests (no tests here): threads, waits, raw publishing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll ``condition`` until true; fail naming ``what`` past ``limit`` (a hang guard)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


class Background:
    """Runs ``target(stop)`` callables in threads; stops and joins them on close."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: dict[str, BaseException] = {}

    def start(self, name: str, target: Callable[[threading.Event], object]) -> None:
        def body() -> None:
            try:
                target(self.stop)
            except BaseException as exc:  # kept for the test to inspect
                self.errors[name] = exc

        thread = threading.Thread(target=body, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"background threads did not stop: {alive}"


def publish_raw(
    broker_url: str,
    queue: str,
    body: bytes,
    message_id: str,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish ``body`` to ``queue`` as any process on the broker could, confirmed."""
    import pika

    from sagalog.infrastructure.rabbitmq import channel_to

    with channel_to(broker_url) as channel:
        channel.basic_publish(
            "",
            queue,
            body,
            pika.BasicProperties(delivery_mode=2, message_id=message_id, headers=headers),
            mandatory=True,
        )
