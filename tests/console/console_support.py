"""The console's test kit: a console on a real port over demo sagas (plus one saga full of
markup and parallel ``Trip`` sagas), and a small HTTP client with a cookie jar."""

from __future__ import annotations

import http.cookiejar
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import uvicorn
from support.sagas import T0, TRIP

from sagalog.domain import CommandKind
from sagalog.infrastructure.console.app import create_app
from sagalog.infrastructure.console.guard import ConsoleGuard
from sagalog.infrastructure.console.reading import ConsoleStore
from sagalog.infrastructure.demo.runner import DemoRates, run_demo
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.projections import SagaProjector
from sagalog.testing import send_reply


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Response:
    def __init__(self, status: int, headers: Any, text: str) -> None:
        self.status, self.headers, self.text = status, headers, text


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )

    def _open(self, request: urllib.request.Request) -> Response:
        try:
            with self.opener.open(request) as response:
                return Response(response.status, response.headers, response.read().decode())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.headers, exc.read().decode())

    def get(self, path: str) -> Response:
        return self._open(urllib.request.Request(self.base + path))

    def json(self, path: str) -> Any:
        response = self.get(path)
        assert response.status == 200, response.text
        return json.loads(response.text)

    def csrf(self) -> str:
        for cookie in self.jar:
            if cookie.name == "sagalog_csrf" and cookie.value:
                return cookie.value
        raise AssertionError("no CSRF cookie yet: GET a page first")

    def post_form(self, path: str, form: dict[str, Any]) -> tuple[int, str]:
        data = urllib.parse.urlencode(form, doseq=True).encode()
        response = self._open(urllib.request.Request(self.base + path, data, method="POST"))
        return response.status, response.text

    def sign_in(self, token: str) -> None:
        self.get("/login")
        code, text = self.post_form("/login", {"token": token, "csrf": self.csrf()})
        assert code == 303, text


TOKEN = "operator-token-for-tests"

#: Markup and quote tricks put into saga data, error texts and operator text.
XSS = (
    "</pre></td><script>window.__xss = 1</script>"
    '"\'><img src=x onerror="window.__xss = 2">'
    '<svg onload="window.__xss = 3"></svg>{{ 7*7 }}'
)


@dataclass
class Console:
    url: str
    store: ConsoleStore
    xss_saga: UUID
    #: Parallel sagas by name: ``uncertain`` rolls back while its timed-out ``hotel`` is
    #: compensated, ``in_flight`` has ``hotel`` and ``car`` in flight.
    trips: dict[str, UUID] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _xss_saga(manager: SagaManager) -> UUID:
    """An order whose data, first step's error and abort text carry markup."""
    saga_id = manager.start(
        "OrderFulfillment", {"order_id": XSS, "items": 1, "amount": 5, "note": XSS}
    )
    send_reply(manager, saga_id, "reserve_inventory", CommandKind.ACTION, False, error=XSS)
    return saga_id


def _trip_sagas(database_url: str) -> dict[str, UUID]:
    """Two parallel ``Trip`` sagas, recorded on a manual clock."""
    clock = ManualClock(T0)
    manager = SagaManager([TRIP], database_url, clock=clock)
    try:
        uncertain = manager.start("Trip", {"trip": "uncertain"})
        manager.handle_step_completed(uncertain, "budget")
        manager.handle_step_failed(uncertain, "hotel", "no rooms")
        manager.tick(clock.advance(11))
        manager.handle_step_completed(uncertain, "flight", {"seat": "2A"})
        manager.tick(clock.advance(31))  # hotel's retry times out: roll back
        in_flight = manager.start("Trip", {"trip": "in flight"})
        manager.handle_step_completed(in_flight, "budget")
        manager.handle_step_completed(in_flight, "flight")
    finally:
        manager.close()
    return {"uncertain": uncertain, "in_flight": in_flight}


def serve(database_url: str, token: str | None) -> Iterator[Console]:
    """Demo sagas (some dead-lettered) in ``database_url``, served on a free port."""
    rates = DemoRates(failure=0.3, compensation_failure=0.3, compensation_stuck=0.3)
    run_demo(database_url=database_url, sagas=40, seed=11, rates=rates)
    trips = _trip_sagas(database_url)
    manager = SagaManager([*DEMO_DEFINITIONS, TRIP], database_url)
    projector = SagaProjector(manager)
    xss = _xss_saga(manager)
    projector.catch_up()
    store = ConsoleStore(manager, projector)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(store, ConsoleGuard(token)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the console did not start")
        time.sleep(0.05)
    try:
        yield Console(f"http://127.0.0.1:{port}", store, xss, trips)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        projector.close()
        manager.close()
