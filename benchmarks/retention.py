"""How many sagas per second does retention retire, and how much memory does it take?

Fills a fresh store with ``--sagas`` completed sagas (one step each: ``SagaStarted``,
``StepDispatched``, ``StepCompleted``, ``SagaCompleted``), plus one running saga, with
``start_many`` and ``handle_many`` on a clock a year in the past; catches the projections
up; then ``--runs`` times restores the archive of the previous run (after the first) and
retires every completed saga again, timing ``retire_sagas`` alone and reading the peak
memory of the retirement (``tracemalloc``: Python allocations, which is what would grow
if retention held the store in memory). Prints sagas retired per second, median and
min-max, and the peak.

    python benchmarks/retention.py [--sagas N] [--runs N] [--batch-size N]
        [--database-url URL ...]        # --sagas 1000000 for the issue's size

By default it measures a SQLite file (in a temporary directory) and a fresh schema on the
local PostgreSQL server (skipped if unreachable). This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from projection_catchup import DEFAULT_POSTGRES, _postgres_schema

from sagalog.domain import SagaDefinition, Step
from sagalog.infrastructure.retention import RetentionPolicy, restore_sagas, retire_sagas
from sagalog.process import Reply, SagaManager
from sagalog.process.clock import ManualClock
from sagalog.projections import SagaProjector

ONE_STEP = SagaDefinition("Retired", [Step(name="do", action="Work.Do", compensation="Work.Undo")])
START = datetime(2025, 1, 1, tzinfo=UTC)


def fill(url: str, sagas: int) -> None:
    """``sagas`` completed sagas and one running one, recorded a year ago; views caught up."""
    clock = ManualClock(START)
    manager = SagaManager([ONE_STEP], url, clock=clock)
    try:
        started = time.perf_counter()
        chunk = 2000
        for first in range(0, sagas, chunk):
            ids = manager.start_many(
                "Retired", [{"n": n} for n in range(first, min(sagas, first + chunk))]
            )
            replies = []
            for saga in manager.get_many(ids).values():
                command = saga.pending_command
                assert command is not None
                replies.append(Reply.to(command, result={"ok": True}))
            manager.handle_many(replies)
        manager.start("Retired", {"n": -1})
        print(f"  filled {sagas:,} sagas in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        projector = SagaProjector(manager)
        projector.catch_up()
        projector.close()
        print(f"  projections caught up in {time.perf_counter() - started:.1f} s", flush=True)
    finally:
        manager.close()


def measure(url: str, *, sagas: int, runs: int, batch_size: int, workdir: Path) -> None:
    """Fill ``url``, then retire (and restore between runs) ``runs`` times."""
    print(url.split("?")[0], flush=True)
    fill(url, sagas)
    manager = SagaManager([ONE_STEP], url)
    rates: list[float] = []
    peaks: list[float] = []
    previous: Path | None = None
    try:
        for run in range(runs):
            if previous is not None:
                back = restore_sagas(manager, previous, actor="bench", reason="next run")
                assert back.sagas == sagas, back
            archive = workdir / f"run{run}.jsonl.gz"
            tracemalloc.start()
            t0 = time.perf_counter()
            report = retire_sagas(
                manager,
                RetentionPolicy(timedelta(days=30)),
                archive=archive,
                actor="bench",
                reason="benchmark",
                batch_size=batch_size,
            )
            seconds = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            assert report.sagas == sagas, report
            rates.append(report.sagas / seconds)
            peaks.append(peak)
            print(
                f"  run {run + 1}: {report.sagas:,} sagas ({report.events:,} events) in "
                f"{seconds:.1f} s, peak {peak:.1f} MiB, "
                f"archive {archive.stat().st_size / 2**20:.1f} MiB",
                flush=True,
            )
            previous = archive
        print(
            f"  {sagas:,} sagas, batch {batch_size}, {runs} runs: median "
            f"{statistics.median(rates):,.0f} sagas/s "
            f"(min-max {min(rates):,.0f}-{max(rates):,.0f}); "
            f"peak traced memory median {statistics.median(peaks):.1f} MiB "
            f"(min-max {min(peaks):.1f}-{max(peaks):.1f})"
        )
    finally:
        manager.close()


def main() -> int:
    """Measure every requested database; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", action="append", default=[])
    parser.add_argument("--sagas", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--postgres-server", default=DEFAULT_POSTGRES)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        options = {"sagas": args.sagas, "runs": args.runs, "batch_size": args.batch_size}
        if args.database_url:
            for number, url in enumerate(args.database_url):
                sub = workdir / str(number)
                sub.mkdir()
                measure(url, workdir=sub, **options)
            return 0
        sqlite_dir = workdir / "sqlite"
        sqlite_dir.mkdir()
        measure(f"sqlite:///{sqlite_dir / 'bench.db'}", workdir=sqlite_dir, **options)
        if not args.skip_postgres:
            with _postgres_schema(args.postgres_server) as url:
                if url is not None:
                    pg_dir = workdir / "pg"
                    pg_dir.mkdir()
                    measure(url, workdir=pg_dir, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
