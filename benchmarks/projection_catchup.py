"""How many events per second does the projection apply when catching up?

Fills a fresh saga store with ``sagalog demo``'s sagas (a realistic mix of
completions, retries, timeouts, compensations and dead letters), then, ``--runs``
times, empties the views and times ``SagaProjector.catch_up()`` from the start
of the log to its head — reading the log, decoding the events, applying them in
batches of ``--batch-size`` per transaction. Prints the events per second,
median and min-max, per database.

By default it measures a SQLite file (in a temporary directory) and a fresh
schema on the local PostgreSQL server (skipped if unreachable)::

    python benchmarks/projection_catchup.py [--sagas N] [--runs N] [--batch-size N]
        [--database-url URL ...]

This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

from sagalog.infrastructure.demo.runner import DemoRates, run_demo
from sagalog.process import SagaManager, parse_database_url
from sagalog.projections import SagaProjector

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def _postgres_schema(server: str) -> Iterator[str | None]:
    """A throw-away schema on ``server`` (``None`` if the server is unreachable)."""
    import psycopg
    from psycopg import sql

    target = parse_database_url(server)

    def connect() -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=target.host or "",
            port=target.port or 5432,
            user=target.user or "",
            dbname=target.dbname or "",
            password=target.password or None,
            autocommit=True,
            connect_timeout=3,
        )

    schema = f"bench_catchup_{uuid.uuid4().hex[:12]}"
    try:
        with connect() as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except psycopg.OperationalError as exc:
        print(f"skipping PostgreSQL: {str(exc).strip().splitlines()[0]}")
        yield None
        return
    parts = urlsplit(server)
    try:
        yield urlunsplit(parts._replace(query=urlencode({"schema": schema})))
    finally:
        with connect() as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def measure(url: str, *, sagas: int, runs: int, batch_size: int) -> None:
    """Fill ``url`` with the demo, then time ``runs`` catch-ups from zero."""
    started = time.perf_counter()
    result = run_demo(database_url=url, sagas=sagas, seed=7, rates=DemoRates())
    print(f"{result.database}: demo of {sagas} sagas in {time.perf_counter() - started:.1f} s")
    manager = SagaManager([], url)
    projector = SagaProjector(manager, batch_size=batch_size)
    try:
        head = projector.head()
        rates: list[float] = []
        for _ in range(runs):
            projector.views.reset()
            t0 = time.perf_counter()
            applied = projector.catch_up()
            seconds = time.perf_counter() - t0
            assert applied == head, (applied, head)
            rates.append(applied / seconds)
        print(
            f"  catch-up of {head:,} events ({projector.views.count_sagas():,} sagas), "
            f"batch {batch_size}, {runs} runs: median {statistics.median(rates):,.0f} events/s "
            f"(min-max {min(rates):,.0f}-{max(rates):,.0f})"
        )
    finally:
        projector.close()
        manager.close()


def main() -> int:
    """Measure every requested database; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", action="append", default=[])
    parser.add_argument("--sagas", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--postgres-server", default=DEFAULT_POSTGRES)
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs must be at least 3")
    options = {"sagas": args.sagas, "runs": args.runs, "batch_size": args.batch_size}
    if args.database_url:
        for url in args.database_url:
            measure(url, **options)
        return 0
    with tempfile.TemporaryDirectory() as directory:
        measure(f"sqlite:///{Path(directory) / 'bench.db'}", **options)
    with _postgres_schema(args.postgres_server) as url:
        if url is not None:
            measure(url, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
