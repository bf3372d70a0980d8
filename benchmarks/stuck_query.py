"""How fast is ``SagaViews.stuck`` on a PostgreSQL summary table of 1,000,000 sagas?

Creates a throw-away schema, creates the view tables with sagalog's own
metadata (so the indexes are the real ones), fills ``saga_summary`` with
``--rows`` rows in one ``INSERT … SELECT FROM generate_series`` (no events, no
projection: only the table shape matters here), runs ``ANALYZE``, then times
the full stuck query — SQL, row decoding and merging, as ``sagalog stuck`` runs
it — ``--runs`` times and prints the median and the min-max. The schema is
dropped afterwards unless ``--keep``.

The generated table looks like a busy production one: 95 % of the sagas ended
(completed or failed, over the last 90 days), 3.5 % running normally, 0.5 %
running with a missed deadline and no event for hours, 0.4 % compensating
normally, 0.4 % compensating for over an hour, 0.2 % dead-lettered.

This is a measurement, not a test: run it by hand::

    python benchmarks/stuck_query.py [--database-url postgresql://…] [--rows N] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from sagalog.process import parse_database_url
from sagalog.projections import SagaViews, StuckPolicy
from sagalog.projections.schema import SUMMARY_TABLE_NAME

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

#: The bulk insert; ``b`` picks the saga's situation per mille, ``now`` is fixed.
FILL = """
INSERT INTO {table} (
    saga_id, saga_type, definition_version, status, current_step, attempt,
    started_at, updated_at, next_deadline, wakeup_kind, last_error, failure_reason,
    event_count, last_version, compensation_started_at, last_progress_at,
    compensating_since, dead_lettered_at, dead_letter_step, dead_letter_kind)
SELECT
    md5(i::text)::uuid,
    CASE WHEN i %% 2 = 0 THEN 'OrderFulfillment' ELSE 'TravelBooking' END,
    1,
    CASE WHEN b < 900 THEN 'COMPLETED' WHEN b < 950 THEN 'FAILED' WHEN b < 990 THEN 'PENDING'
         WHEN b < 998 THEN 'COMPENSATING' ELSE 'DEAD_LETTERED' END,
    CASE WHEN b >= 950 AND b < 998 THEN 'process_payment' END,
    1,
    updated - interval '90 seconds',
    updated,
    CASE WHEN b >= 950 AND b < 985 THEN %(now)s + (i %% 60) * interval '1 second'
         WHEN b >= 985 AND b < 990 THEN updated + interval '30 seconds'
         WHEN b >= 990 AND b < 998 THEN %(now)s + interval '20 seconds' END,
    CASE WHEN b >= 950 AND b < 998 THEN 'deadline' END,
    CASE WHEN b >= 900 AND b < 950 OR b >= 998 THEN 'declined' END,
    CASE WHEN b >= 900 AND b < 950 THEN 'step failed' END,
    8,
    8,
    CASE WHEN b >= 900 AND b < 950 THEN updated - interval '30 seconds'
         WHEN b >= 990 AND b < 994 THEN updated - interval '60 seconds'
         WHEN b >= 994 AND b < 998
             THEN %(now)s - interval '1 hour' - (i %% 3600) * interval '1 second'
    END,
    CASE WHEN b >= 950 AND b < 998 THEN updated END,
    CASE WHEN b >= 990 AND b < 994 THEN updated - interval '60 seconds'
         WHEN b >= 994 AND b < 998
             THEN %(now)s - interval '1 hour' - (i %% 3600) * interval '1 second'
    END,
    CASE WHEN b >= 998 THEN updated END,
    CASE WHEN b >= 998 THEN 'send_confirmation' END,
    CASE WHEN b >= 998 THEN 'action' END
FROM (
    SELECT i, i %% 1000 AS b,
        CASE
            WHEN i %% 1000 < 950 THEN %(now)s - (i %% 7776000) * interval '1 second'
            WHEN i %% 1000 < 985 THEN %(now)s - (i %% 600) * interval '1 second'
            WHEN i %% 1000 < 990
                THEN %(now)s - interval '2 hours' - (i %% 3600) * interval '1 second'
            WHEN i %% 1000 < 998 THEN %(now)s - (i %% 300) * interval '1 second'
            ELSE %(now)s - (i %% 86400) * interval '1 second'
        END AS updated
    FROM generate_series(1, %(rows)s) AS i
) AS g
"""


def _with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({"schema": schema})))


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    target = parse_database_url(url)
    return psycopg.connect(
        host=target.host or "",
        port=target.port or 5432,
        user=target.user or "",
        dbname=target.dbname or "",
        password=target.password or None,
        autocommit=True,
    )


def main() -> int:
    """Fill, measure, report; the exit code is 0 unless the database is unusable."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--limit", type=int, default=100, help="the stuck query's limit")
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    parser.add_argument("--explain", action="store_true", help="print the query plans")
    args = parser.parse_args()
    if args.runs < 20:
        parser.error("--runs must be at least 20")

    schema = f"bench_stuck_{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC).replace(microsecond=0)
    with _connect(args.database_url) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    views = SagaViews(_with_schema(args.database_url, schema))
    try:
        table = sql.Identifier(schema, SUMMARY_TABLE_NAME)
        started = time.perf_counter()
        with _connect(args.database_url) as conn:
            conn.execute(sql.SQL(FILL).format(table=table), {"now": now, "rows": args.rows})
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
        print(f"generated {args.rows:,} summary rows in {time.perf_counter() - started:.1f} s")
        print(f"by status: {dict(sorted(views.count_by_status().items()))}")

        policy = StuckPolicy()
        views.stuck(now=now, policy=policy, limit=args.limit)  # warm the pool and caches
        timings: list[float] = []
        result = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            result = views.stuck(now=now, policy=policy, limit=args.limit)
            timings.append((time.perf_counter() - t0) * 1000)
        reasons = Counter(s.reason.value for s in result)
        print(f"stuck query (limit {args.limit}): {len(result)} sagas {dict(reasons)}")
        print(
            f"stuck query on {args.rows:,} rows, {args.runs} runs: "
            f"median {statistics.median(timings):.2f} ms "
            f"(min-max {min(timings):.2f}-{max(timings):.2f} ms)"
        )
        if args.explain:
            _explain(args.database_url, schema, now)
    finally:
        views.close()
        if not args.keep:
            with _connect(args.database_url) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return 0


def _explain(url: str, schema: str, now: datetime) -> None:
    """Print the plans of the four id queries and the row fetch, as SagaViews sends them."""
    table = sql.Identifier(schema, SUMMARY_TABLE_NAME)
    queries = {
        "DEAD_LETTERED": ("dead_lettered_at", "dead_lettered_at IS NOT NULL"),
        "DEADLINE_MISSED": ("next_deadline", "next_deadline < %(cut)s"),
        "COMPENSATION_TOO_LONG": ("compensating_since", "compensating_since < %(cut)s"),
        "NO_PROGRESS": ("last_progress_at", "last_progress_at < %(cut)s"),
    }
    with _connect(url) as conn:
        ids: list[object] = []
        for reason, (column, where) in queries.items():
            statement = sql.SQL(
                "SELECT saga_id, {column} FROM {table} WHERE "
                + where
                + " ORDER BY {column}, saga_id LIMIT 100"
            ).format(column=sql.Identifier(column), table=table)
            ids.extend(row[0] for row in conn.execute(statement, {"cut": now}).fetchall())
            _print_plan(conn, reason, statement, {"cut": now})
        fetch = sql.SQL("SELECT * FROM {table} WHERE saga_id = ANY(%(ids)s)").format(table=table)
        _print_plan(conn, "summary rows of the sagas kept", fetch, {"ids": ids[:100]})


def _print_plan(
    conn: psycopg.Connection[tuple[object, ...]],
    title: str,
    statement: sql.Composed,
    params: dict[str, object],
) -> None:
    explain = sql.SQL("EXPLAIN (ANALYZE, COSTS OFF) ") + statement
    print(f"-- {title}")
    for (line,) in conn.execute(explain, params).fetchall():
        text = str(line)
        print(f"   {text if len(text) <= 150 else text[:147] + '...'}")


if __name__ == "__main__":
    sys.exit(main())
