"""Two saga managers in two processes race over the same sagas and lose nothing.

Each process (``workers/race_worker.py``) has its own ``SagaManager`` on the same
database and answers the pending command of every open saga as that saga's
plan says, and both tick the shared logical clock when nothing is left to
answer. So the two race to record the very same transitions — replies with the
same ``message_id``, replies with different ``message_id`` s for the same step
and attempt, and the same timeouts and retries fired by both ticks — and the
optimistic-concurrency check of the store decides who wins; the loser reloads
and decides again (``SagaManager._transition``).

Afterwards every saga's history must be a valid sequence with each transition
exactly once: it obeys the laws (``history_problems``), ends as its plan says,
and equals, event for event, the history one manager alone records for the
same plan. The workers report the conflicts they hit, which must be more than
zero: otherwise the test would not have exercised the retry path at all.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from workers.history_checks import history_problems
from workers.race_worker import (
    DEFINITION,
    EXPECTED_END,
    PLANS,
    T0,
    DriveStats,
    EpochClock,
    drive,
    saga_id_for,
)

from sagalog.domain import Saga
from sagalog.process import DatabaseUnavailableError, SagaManager

WORKER = Path(__file__).parent / "workers" / "race_worker.py"
SAGAS = 50
READY_WITHIN = 60.0
RUN_WITHIN = 120.0

Signature = list[tuple[str, str | None, int | None]]


@pytest.fixture
def shared_database_url(backend: str, database_url: str) -> str:
    if backend == "memory":
        pytest.skip("managers cannot share an in-memory store")
    return database_url


def _signature(events: list[Saga.Event]) -> Signature:
    """What happened, in order, without times, ids or causes."""
    return [
        (type(event).__name__, getattr(event, "step", None), getattr(event, "attempt", None))
        for event in events
    ]


def _start_sagas(manager: SagaManager) -> None:
    for index in range(SAGAS):
        manager.start(DEFINITION.name, {"n": index}, saga_id=saga_id_for(index))


def _reference_histories(tmp_path: Path) -> tuple[dict[int, Signature], DriveStats]:
    """The histories one manager alone records for the same plans, and what it did."""
    clock = EpochClock(str(tmp_path / "reference-epoch.db"))
    manager = SagaManager([DEFINITION], "memory://", clock=clock)
    try:
        _start_sagas(manager)
        stats = drive(manager, SAGAS, "ref", clock, within=RUN_WITHIN)
        histories = {i: _signature(manager.history(saga_id_for(i))) for i in range(SAGAS)}
        return histories, stats
    finally:
        manager.close()
        clock.close()


def _read_line(process: subprocess.Popen[str], within: float) -> str | None:
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], within)
    if not readable:
        return None
    return process.stdout.readline().strip()


@pytest.mark.slow
def test_two_managers_in_two_processes_record_each_transition_exactly_once(
    shared_database_url: str, tmp_path: Path
) -> None:
    starter = SagaManager([DEFINITION], shared_database_url, clock=lambda: T0)
    try:
        _start_sagas(starter)
    finally:
        starter.close()

    epoch_path = tmp_path / "epoch.db"
    EpochClock(str(epoch_path)).close()  # create it before the workers race to
    processes: list[subprocess.Popen[str]] = []
    logs: list[Path] = []
    summaries: list[dict[str, Any]] = []
    try:
        for tag in ("w1", "w2"):
            log = tmp_path / f"{tag}.log"
            logs.append(log)
            with log.open("w") as err:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(WORKER),
                            shared_database_url,
                            str(epoch_path),
                            tag,
                            "--sagas",
                            str(SAGAS),
                            "--within",
                            str(RUN_WITHIN),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                    )
                )
        for process, log in zip(processes, logs, strict=True):
            line = _read_line(process, READY_WITHIN)
            assert line == "ready", f"worker not ready ({line!r}):\n{log.read_text()}"
        for process in processes:  # the barrier: both go at once
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        for process, log in zip(processes, logs, strict=True):
            try:
                process.wait(timeout=RUN_WITHIN + 30)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"worker still running after {RUN_WITHIN + 30:.0f}s:\n{log.read_text()[-3000:]}"
                )
            assert process.returncode == 0, f"worker failed:\n{log.read_text()[-3000:]}"
            assert process.stdout is not None
            out = process.stdout.read().splitlines()
            summary_lines = [line for line in out if line.startswith("summary ")]
            assert summary_lines, f"worker printed no summary: {out}"
            summaries.append(json.loads(summary_lines[-1].removeprefix("summary ")))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()

    reference, alone = _reference_histories(tmp_path)
    manager = SagaManager([DEFINITION], shared_database_url)
    problems: list[str] = []
    mismatched: dict[int, Signature] = {}
    ends: Counter[str] = Counter()
    try:
        for index in range(SAGAS):
            saga_id = saga_id_for(index)
            events = manager.history(saga_id)
            problems.extend(history_problems(saga_id, events, DEFINITION))
            status = manager.get(saga_id).status
            ends[status.value] += 1
            expected = EXPECTED_END[index % len(PLANS)]
            if status is not expected:
                problems.append(f"saga {index} ended {status.value}, its plan says {expected}")
            if _signature(events) != reference[index]:
                mismatched[index] = _signature(events)
    finally:
        manager.close()

    assert not problems, "\n".join(problems[:20])
    for index, recorded in mismatched.items():
        pytest.fail(
            f"{len(mismatched)} sagas differ from the history one manager records alone; "
            f"saga {index} recorded {recorded}, alone {reference[index]}"
        )
    conflicts = sum(int(s["conflicts"]) for s in summaries)
    verdicts: Counter[str] = Counter()
    for s in summaries:
        verdicts.update(s["outcomes"])
    # Each reply and each timer was applied by exactly one of the two managers.
    assert verdicts["applied"] == alone.outcomes["applied"], (
        f"the two managers applied {verdicts['applied']} replies between them; "
        f"one manager alone applies {alone.outcomes['applied']}"
    )
    firings = sum(int(s["moved_by_tick"]) for s in summaries)
    assert firings == alone.moved_by_tick, (
        f"both managers' ticks together fired {firings} timeouts and retries; "
        f"one manager alone fires {alone.moved_by_tick}"
    )
    assert conflicts > 0, f"the two managers never conflicted: {summaries}"
    assert verdicts["duplicate"] + verdicts["stale"] > 0, (
        f"no reply was ever judged a duplicate or stale: {summaries}"
    )
    assert all(s["outcomes"].get("applied", 0) > 0 for s in summaries), (
        f"each manager should have recorded some transitions: {summaries}"
    )
    print(
        f"\ntwo managers: ends {dict(ends)}; conflicts retried {conflicts}; "
        f"verdicts {dict(verdicts)}; workers {summaries}"
    )


def test_managers_started_at_the_same_instant_all_open_the_store(
    shared_database_url: str,
) -> None:
    """Replicas started together must not trip over each other's table creation.

    eventsourcing creates its tables, types and functions whenever an
    application starts. On PostgreSQL two of those at the same instant collide
    in the catalogs ("tuple concurrently updated", a unique violation on
    ``pg_type``); on a new SQLite file both record the tracking table's migration
    marker and the second is refused. Either way a manager failed to start with
    "cannot reach database". Threads suffice to provoke it: the collision is in
    the database. The first round meets an empty store, the others existing tables.
    """
    managers_per_round = 4
    failures: list[str] = []

    def open_store(barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            SagaManager([DEFINITION], shared_database_url).close()
        except DatabaseUnavailableError as exc:
            failures.append(str(exc))

    for _ in range(5):
        barrier = threading.Barrier(managers_per_round)
        threads = [
            threading.Thread(target=open_store, args=(barrier,)) for _ in range(managers_per_round)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a manager hung while opening"
    assert not failures, f"{len(failures)} managers failed to open the store: {failures[0]}"
