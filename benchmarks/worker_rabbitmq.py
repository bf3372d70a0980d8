"""How many replies per second does the RabbitMQ reply consumer apply?

The reply loop of ``sagalog worker --transport rabbitmq``, on its own: each run
starts ``--sagas`` sagas of the benchmarks' four-step saga, publishes a
completed reply per step (each saga then completes; the sagas interleaved, step
by step, so a batch holds several replies of one saga) to a fresh replies queue
on the local broker, then times a :class:`~sagalog.infrastructure.rabbitmq.ReplyConsumer`
from its start until every reply is committed and acked. Batch size 1 is one
reply per transaction with one in flight, as the consumer worked before it
batched; the default batch size hands up to that many delivered replies to
``handle_many`` at once. Prints replies per second, median and min-max of
``--runs`` runs, per database and batch size::

    python benchmarks/worker_rabbitmq.py [--sagas N] [--runs N] [--batch-size N ...]
        [--database-url URL ...] [--rabbitmq-url URL]

By default it measures a SQLite file (in a temporary directory) and a fresh
schema on the local PostgreSQL server (skipped if unreachable). This is a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pika
from bench_common import BENCH_DEFINITION, STEPS, saga_data
from projection_catchup import DEFAULT_POSTGRES, _postgres_schema

from sagalog.domain import CommandKind, SagaStatus, command_id_for
from sagalog.infrastructure.rabbitmq import ReplyConsumer
from sagalog.infrastructure.rabbitmq.replies import DEFAULT_REPLY_BATCH_SIZE
from sagalog.infrastructure.rabbitmq.topology import channel_to, unique_topology
from sagalog.process import SagaManager


def one_run(manager: SagaManager, broker: str, *, sagas: int, batch_size: int) -> float:
    """Queue a reply per step of each saga, drain them with a consumer; return replies/s."""
    ids = manager.start_many(BENCH_DEFINITION.name, [saga_data(i) for i in range(sagas)])
    topology = unique_topology("sagalog-bench")
    with channel_to(broker) as channel:
        topology.declare(channel)
        for step in STEPS:
            for saga_id in ids:
                command_id = command_id_for(saga_id, step, CommandKind.ACTION, 1)
                body = {
                    "message_id": f"{saga_id}:{step}",
                    "saga_id": str(saga_id),
                    "command_id": str(command_id),
                    "step": step,
                }
                channel.basic_publish(
                    "",
                    topology.replies_queue,
                    json.dumps({**body, "outcome": "completed"}).encode(),
                    pika.BasicProperties(delivery_mode=2, message_id=body["message_id"]),
                    mandatory=True,
                )
    total = len(ids) * len(STEPS)
    consumer = ReplyConsumer(manager, broker, topology=topology, batch_size=batch_size)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    started = time.perf_counter()
    thread.start()
    while consumer.handled + consumer.dead_lettered < total:
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    stop.set()
    thread.join()
    with channel_to(broker) as channel:
        topology.delete(channel)
    assert consumer.dead_lettered == 0, consumer.dead_lettered
    assert all(saga.status is SagaStatus.COMPLETED for saga in manager.get_many(ids).values())
    return total / seconds


def measure(url: str, broker: str, *, sagas: int, runs: int, batch_sizes: list[int]) -> None:
    """Print replies per second on ``url`` for each batch size."""
    manager = SagaManager([BENCH_DEFINITION], url)
    try:
        print(f"{manager.database_url.masked}: {len(STEPS) * sagas:,} replies per run")
        for batch_size in batch_sizes:
            rates = [
                one_run(manager, broker, sagas=sagas, batch_size=batch_size) for _ in range(runs)
            ]
            print(
                f"  batch size {batch_size:>4}, {runs} runs: median "
                f"{statistics.median(rates):,.0f} replies/s "
                f"(min-max {min(rates):,.0f}-{max(rates):,.0f})",
                flush=True,
            )
    finally:
        manager.close()


def main() -> int:
    """Measure every requested database; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", action="append", default=[])
    parser.add_argument("--rabbitmq-url", default=None)
    parser.add_argument("--sagas", type=int, default=750)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, action="append", default=[], dest="batch_sizes")
    parser.add_argument("--postgres-server", default=DEFAULT_POSTGRES)
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs must be at least 3")
    options = {
        "sagas": args.sagas,
        "runs": args.runs,
        "batch_sizes": args.batch_sizes or [1, DEFAULT_REPLY_BATCH_SIZE],
    }
    broker = args.rabbitmq_url
    if args.database_url:
        for url in args.database_url:
            measure(url, broker, **options)
        return 0
    with tempfile.TemporaryDirectory() as directory:
        measure(f"sqlite:///{Path(directory) / 'bench.db'}", broker, **options)
    with _postgres_schema(args.postgres_server) as url:
        if url is not None:
            measure(url, broker, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
