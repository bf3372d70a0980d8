"""Small helpers of the adversarial tests (no tests here): raw publishing, a TCP proxy, a cipher.

Threads and waits are the broker tests' (``support.broker``).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any
from uuid import UUID

from sagalog.domain import CommandKind, command_id_for


def publish_raw(
    broker_url: str,
    queue: str,
    body: bytes,
    message_id: str,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish ``body`` to ``queue`` as any process on the broker could, confirmed."""
    import pika

    from sagalog.infrastructure.rabbitmq.topology import channel_to

    with channel_to(broker_url) as channel:
        channel.basic_publish(
            "",
            queue,
            body,
            pika.BasicProperties(delivery_mode=2, message_id=message_id, headers=headers),
            mandatory=True,
        )


class TcpProxy:
    """A TCP forwarder to ``target`` on a port of its own that a test can take down and up.

    An outage of a shared server (PostgreSQL, RabbitMQ) is simulated without touching
    the server: :meth:`down` closes the listening socket and every connection through
    it (clients see their connections drop and new ones refused); :meth:`up` listens
    on the same port again.
    """

    def __init__(self, host: str, port: int) -> None:
        import socket

        self.target = (host, port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self._listener: Any = None
        self._sockets: list[Any] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        import socket

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        import contextlib

        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        for sock in [listener, *sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(2)
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self, listener: Any) -> None:
        import socket

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(2)


class KeyedCipher:
    """A stand-in for an eventsourcing cipher that, like ``AESCipher``, needs ``CIPHER_KEY``."""

    def __init__(self, environment: Any) -> None:
        if not environment.get("CIPHER_KEY"):
            raise OSError("'CIPHER_KEY' not in env")

    def encrypt(self, plaintext: bytes) -> bytes:
        return plaintext

    def decrypt(self, ciphertext: bytes) -> bytes:
        return ciphertext


def first_command_id(saga_id: UUID, step: str = "reserve_inventory") -> str:
    """The id of the first action command of ``step``: what a reply to it names."""
    return str(command_id_for(saga_id, step, CommandKind.ACTION, 1))
