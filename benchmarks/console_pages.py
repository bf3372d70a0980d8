"""How fast are the console's pages on a PostgreSQL store of 1,000,000 sagas?

Creates a throw-away schema, fills ``saga_summary`` with ``--rows`` generated rows in
one ``INSERT … SELECT`` (the read model only, as ``stuck_query.py`` does: the list and
stuck pages read nothing else), runs ``--sagas`` real demo sagas into the same schema
(the saga page reads a saga's log, so those have events), serves the console on a local
port and times whole HTTP requests — query, rendering, transfer — ``--runs`` times per
page: p50 and p99 (and min-max). The schema is dropped afterwards unless ``--keep``.

This is a measurement, not a test: run it by hand::

    python benchmarks/console_pages.py [--database-url postgresql://…] [--rows N] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from psycopg import sql
from stuck_query import FILL, _connect, _with_schema

from sagalog.infrastructure.console.reading import EXPLAINED_STUCK, ConsoleStore
from sagalog.infrastructure.demo.runner import DemoRates, run_demo
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.process import SagaManager
from sagalog.projections import SagaProjector, SagaViews
from sagalog.projections.schema import SUMMARY_TABLE_NAME

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _serve(database_url: str) -> Iterator[str]:
    """The console over ``database_url`` on a free local port (read-only)."""
    import socket
    import threading

    import uvicorn

    from sagalog.infrastructure.console.app import create_app
    from sagalog.infrastructure.console.guard import ConsoleGuard
    from sagalog.infrastructure.console.reading import ConsoleStore

    manager = SagaManager(list(DEMO_DEFINITIONS), database_url)
    projector = SagaProjector(manager)
    projector.catch_up()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    app = create_app(ConsoleStore(manager, projector), ConsoleGuard(None))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        projector.close()
        manager.close()


def _time(url: str, runs: int) -> list[float]:
    timings = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url) as response:
            response.read()
            assert response.status == 200
        timings.append((time.perf_counter() - t0) * 1000)
    return timings[1:]  # the first warms the pool and caches


def _p(timings: list[float], q: float) -> float:
    ordered = sorted(timings)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sagas", type=int, default=200, help="real demo sagas (with logs)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    args = parser.parse_args()

    schema = f"bench_console_{uuid.uuid4().hex[:12]}"
    url = _with_schema(args.database_url, schema)
    now = datetime.now(UTC).replace(microsecond=0)
    with _connect(args.database_url) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        views = SagaViews(url)
        table = sql.Identifier(schema, SUMMARY_TABLE_NAME)
        started = time.perf_counter()
        with _connect(args.database_url) as conn:
            conn.execute(sql.SQL(FILL).format(table=table), {"now": now, "rows": args.rows})
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
        print(f"generated {args.rows:,} summary rows in {time.perf_counter() - started:.1f} s")
        views.close()
        run_demo(database_url=url, sagas=args.sagas, seed=3, rates=DemoRates())
        for base in _serve(url):
            with urllib.request.urlopen(base + "/api/sagas?type=TravelBooking&limit=1") as r:
                saga_id = json.loads(r.read())["sagas"][0]["saga_id"]
            # A page deep in the list: follow the cursor 20 pages down.
            cursor = ""
            for _ in range(20):
                with urllib.request.urlopen(f"{base}/api/sagas?status=FAILED&cursor={cursor}") as r:
                    cursor = json.loads(r.read())["next_cursor"]
            pages = {
                "sagas, first page": "/sagas",
                "sagas, FAILED, 21st page (keyset)": f"/sagas?status=FAILED&cursor={cursor}",
                "sagas, one type, first page": "/sagas?type=OrderFulfillment",
                "sagas, error contains 'declined'": "/sagas?error=declined",
                "stuck": "/stuck",
                "one saga": f"/sagas/{saga_id}",
                "overview": "/",
            }
            with urllib.request.urlopen(base + f"/api/sagas?limit={EXPLAINED_STUCK}") as r:
                with_logs = [row["saga_id"] for row in json.loads(r.read())["sagas"]]
            print(f"{args.rows:,} generated rows + {args.sagas} demo sagas, {args.runs} runs each")
            for name, path in pages.items():
                timings = _time(base + path, args.runs)
                print(
                    f"  {name:36} p50 {statistics.median(timings):7.1f} ms  "
                    f"p99 {_p(timings, 0.99):7.1f} ms  "
                    f"(min-max {min(timings):.1f}-{max(timings):.1f})"
                )
        # The generated stuck rows have no log, so the stuck page's explanations (of its
        # EXPLAINED_STUCK most urgent sagas) cost little above; this is their full cost.
        manager = SagaManager(list(DEMO_DEFINITIONS), url)
        try:
            store = ConsoleStore(manager, SagaProjector(manager))
            ids = [uuid.UUID(i) for i in with_logs]
            timings = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                assert len(store.advice(ids)) == len(ids)
                timings.append((time.perf_counter() - t0) * 1000)
            print(
                f"  {'+ explaining ' + str(len(ids)) + ' sagas with logs':36} "
                f"p50 {statistics.median(timings):7.1f} ms  p99 {_p(timings, 0.99):7.1f} ms"
            )
            store.projector.close()
        finally:
            manager.close()
    finally:
        if not args.keep:
            with _connect(args.database_url) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
