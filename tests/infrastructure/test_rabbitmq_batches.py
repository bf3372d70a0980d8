"""The reply consumer in batches: many replies, one ``handle_many``, acked after it returned.

Against the real broker and the test's real store. The database failures are
real too: on SQLite another connection holds the write lock (the manager's
writes time out with "database is locked"), on PostgreSQL a trigger in the
test's schema refuses every insert into the events table; ending the outage
releases the lock or drops the trigger.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import UUID

import pika
import pytest
from support.broker import Background, wait_until
from test_rabbitmq import ORDER

from sagalog.domain import CommandKind, Saga, SagaStatus, command_id_for
from sagalog.infrastructure.rabbitmq import ReplyConsumer, Topology, read_dead_letters
from sagalog.infrastructure.rabbitmq.topology import channel_to, queue_depth
from sagalog.process import SagaManager


def _publish(broker_url: str, topology: Topology, bodies: list[tuple[str, bytes]]) -> None:
    """Publish ``(message_id, body)`` pairs to the replies queue, in order, confirmed."""
    with channel_to(broker_url) as channel:
        topology.declare(channel)
        for message_id, body in bodies:
            channel.basic_publish(
                "",
                topology.replies_queue,
                body,
                pika.BasicProperties(delivery_mode=2, message_id=message_id),
                mandatory=True,
            )


def _reply(saga_id: UUID, step: str, **fields: Any) -> tuple[str, bytes]:
    message_id = f"{saga_id}:{step}"
    kind = CommandKind(fields.get("kind", "action"))
    command_id = command_id_for(saga_id, step, kind, int(fields.get("attempt") or 1))
    data = {"message_id": message_id, "saga_id": str(saga_id), "step": step}
    data.update({"command_id": str(command_id), "outcome": "completed", **fields})
    return message_id, json.dumps(data).encode()


def _completed(manager: SagaManager, saga_id: UUID, step: str) -> int:
    return sum(
        isinstance(e, Saga.StepCompleted) and e.step == step for e in manager.history(saga_id)
    )


def test_replies_for_many_sagas_are_handled_in_batches_in_order_and_acked(
    broker_url: str, topology: Topology, database_url: str, background: Background
) -> None:
    manager = SagaManager([ORDER], database_url)
    try:
        sagas = manager.start_many("Order", [{"n": i} for i in range(40)])
        # Each saga's three replies in order, the sagas interleaved: a batch holds
        # several replies of one saga, and a reply out of order would be refused.
        _publish(
            broker_url,
            topology,
            [_reply(saga_id, step) for step in ("reserve", "charge", "ship") for saga_id in sagas],
        )
        assert queue_depth(topology.replies_queue, broker_url) == 120
        consumer = ReplyConsumer(
            manager, broker_url, topology=topology, batch_size=50, batch_wait=1.0
        )
        background.start("replies", consumer.run)
        wait_until(lambda: consumer.handled == 120, message="every reply handled and acked")
        assert consumer.dead_lettered == 0
        assert consumer.batches < 120  # many replies per transaction, not one each
        assert queue_depth(topology.replies_queue, broker_url) == 0
        for saga_id in sagas:
            assert manager.get(saga_id).status is SagaStatus.COMPLETED
            assert [_completed(manager, saga_id, s) for s in ("reserve", "charge", "ship")] == [
                1,
                1,
                1,
            ]
    finally:
        background.close()
        manager.close()


def test_an_invalid_reply_in_a_batch_dead_letters_only_itself(
    broker_url: str, topology: Topology, database_url: str, background: Background
) -> None:
    manager = SagaManager([ORDER], database_url)
    try:
        sagas = manager.start_many("Order", [{"n": i} for i in range(6)])
        good = [_reply(saga_id, "reserve") for saga_id in sagas]
        bad = [  # in the order published, among the good ones
            _reply(sagas[0], "teleport"),
            ("m-garbage", b"{not json"),
            _reply(sagas[1], "ship"),  # never dispatched
        ]
        _publish(broker_url, topology, [*good[:3], bad[0], bad[1], *good[3:], bad[2]])
        consumer = ReplyConsumer(manager, broker_url, topology=topology, batch_wait=1.0)
        background.start("replies", consumer.run)
        wait_until(
            lambda: consumer.handled + consumer.dead_lettered == 9, message="all nine settled"
        )
        assert (consumer.handled, consumer.dead_lettered) == (6, 3)
        assert consumer.batches < 9
        letters = read_dead_letters(topology.replies_dead_letter_queue, broker_url)
        assert [letter.message_id for letter in letters] == [message_id for message_id, _ in bad]
        assert [letter.error for letter in letters] == [
            "UnknownStepError",
            "InvalidReplyError",
            "UnexpectedReplyError",
        ]
        assert "teleport" in letters[0].reason
        for saga_id in sagas:
            assert _completed(manager, saga_id, "reserve") == 1
            assert manager.get(saga_id).steps["charge"].status.value == "DISPATCHED"
        assert queue_depth(topology.replies_queue, broker_url) == 0
    finally:
        background.close()
        manager.close()


class Outage:
    """Makes the test's real database refuse the manager's writes, then lets them through."""

    def __init__(self, backend: str, database_url: str) -> None:
        self.backend = backend
        self.database_url = database_url
        self._sqlite: sqlite3.Connection | None = None

    @property
    def manager_url(self) -> str:
        """The URL for the manager: on SQLite, a lock wait of 1 s instead of 10."""
        if self.backend == "sqlite":
            return f"{self.database_url}?lock_timeout=1"
        return self.database_url

    def begin(self) -> None:
        if self.backend == "sqlite":
            path = self.database_url.removeprefix("sqlite:///")
            self._sqlite = sqlite3.connect(path, isolation_level=None)
            self._sqlite.execute("BEGIN EXCLUSIVE")  # the write lock, held
        else:
            self._postgres(
                "CREATE FUNCTION {schema}.refuse_writes() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'writes refused (test outage)'; END $$",
                "CREATE TRIGGER refuse_writes BEFORE INSERT ON {schema}.sagamanager_events "
                "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_writes()",
            )

    def end(self) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
            self._sqlite = None
        elif self.backend == "postgres":
            self._postgres(
                "DROP TRIGGER IF EXISTS refuse_writes ON {schema}.sagamanager_events",
                "DROP FUNCTION IF EXISTS {schema}.refuse_writes()",
            )

    def _postgres(self, *statements: str) -> None:
        import psycopg
        from psycopg import sql

        parts = urlsplit(self.database_url)
        schema = dict(parse_qsl(parts.query))["schema"]
        conninfo = parts._replace(query="", scheme="postgresql").geturl()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for statement in statements:
                conn.execute(sql.SQL(statement).format(schema=sql.Identifier(schema)))


@pytest.fixture
def outage(backend: str, database_url: str) -> Iterator[Outage]:
    if backend == "memory":
        pytest.skip("needs a real database: a database failure")
    made = Outage(backend, database_url)
    try:
        yield made
    finally:
        made.end()


def test_a_database_failure_mid_batch_leaves_the_replies_on_the_queue_until_it_recovers(
    broker_url: str, topology: Topology, outage: Outage
) -> None:
    manager = SagaManager([ORDER], outage.manager_url)
    first, second = Background(), Background()
    try:
        sagas = manager.start_many("Order", [{"n": i} for i in range(20)])
        early, late = sagas[:5], sagas[5:]
        consumer = ReplyConsumer(manager, broker_url, topology=topology, batch_wait=0.2)
        first.start("replies", consumer.run)
        _publish(broker_url, topology, [_reply(saga_id, "reserve") for saga_id in early])
        wait_until(lambda: consumer.handled == 5, message="the first replies")

        outage.begin()
        _publish(broker_url, topology, [_reply(saga_id, "reserve") for saga_id in late])
        wait_until(lambda: consumer.database_errors >= 2, message="the batch to fail, twice")
        first.close()  # the consumer stops with the batch unacked
        assert consumer.handled == 5
        assert consumer.dead_lettered == 0
        wait_until(
            lambda: queue_depth(topology.replies_queue, broker_url) == 15,
            message="the unacked replies back on the queue",
        )
        for saga_id in late:
            assert manager.get(saga_id).steps["reserve"].status.value == "DISPATCHED"

        outage.end()
        again = ReplyConsumer(manager, broker_url, topology=topology, batch_wait=0.2)
        second.start("replies", again.run)
        wait_until(lambda: again.handled == 15, message="the replies applied after recovery")
        assert again.dead_lettered == 0
        assert queue_depth(topology.replies_queue, broker_url) == 0
        assert read_dead_letters(topology.replies_dead_letter_queue, broker_url) == []
        for saga_id in sagas:
            assert _completed(manager, saga_id, "reserve") == 1
            assert manager.get(saga_id).steps["charge"].status.value == "DISPATCHED"
    finally:
        first.close()
        second.close()
        manager.close()


def test_a_consumer_retries_a_batch_in_place_while_the_database_is_down(
    broker_url: str, topology: Topology, outage: Outage, background: Background
) -> None:
    manager = SagaManager([ORDER], outage.manager_url)
    try:
        sagas = manager.start_many("Order", [{"n": i} for i in range(10)])
        consumer = ReplyConsumer(manager, broker_url, topology=topology, batch_wait=0.2)
        outage.begin()
        background.start("replies", consumer.run)
        _publish(broker_url, topology, [_reply(saga_id, "reserve") for saga_id in sagas])
        wait_until(lambda: consumer.database_errors >= 2, message="the batch to fail, twice")
        assert consumer.handled == 0
        outage.end()
        wait_until(lambda: consumer.handled == 10, message="the batch applied once recovered")
        assert consumer.dead_lettered == 0
        assert queue_depth(topology.replies_queue, broker_url) == 0
        for saga_id in sagas:
            assert _completed(manager, saga_id, "reserve") == 1
    finally:
        background.close()
        manager.close()
