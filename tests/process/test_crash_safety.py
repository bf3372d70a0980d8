"""Crash safety: a worker SIGKILLed at random moments and restarted loses no saga.

A worker process (``workers/crash_worker.py``) runs the whole pipeline with the
real clock: ``SagaManager`` + ``CommandRelay`` + a durable broker queue +
participants that answer through ``manager.handle``. The test kills it with
SIGKILL at seeded random moments, restarts it, and finally lets a last run
finish. Then, from the stores alone, it checks that every saga exists and
ended, that each history obeys the laws, that no command was dispatched twice
or under another id, and that every dispatched command reached the participants,
which dropped the re-deliveries by command id.

The first run SIGKILLs *itself* right after the broker confirmed a command and
before the relay recorded its position — the at-least-once window — so the
next run is guaranteed to re-send commands the participants already have;
the random kills add more such windows (and redeliveries of unacknowledged
broker messages) where chance puts them.
"""

from __future__ import annotations

import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from uuid import UUID

import pytest
from eventsourcing.utils import get_topic
from workers.crash_worker import DEFINITION, ENDING_TOPICS, saga_id_for
from workers.history_checks import history_problems

from sagalog.domain import Saga, SagaNotFoundError, SagaStatus
from sagalog.process import SagaManager

pytestmark = [
    pytest.mark.slow,
    pytest.mark.requires_database(
        reason="killing a process proves nothing about a store that dies with it"
    ),
]

WORKER = Path(__file__).parent / "workers" / "crash_worker.py"
SAGAS = 200
RANDOM_KILLS = 15
SEED = 20_261_122
#: The first run kills itself after the broker confirmed this many commands.
INJECTED_CRASH_AFTER_SENDS = 15
#: Bounded waits (they fail the test with a message, they assert nothing about speed).
READY_WITHIN = 60.0
FINAL_RUN_WITHIN = 120.0
MIN_KILLS_MID_FLIGHT = 3


@dataclass
class WorkerRun:
    """One process of the worker, its log and how it ended."""

    number: int
    process: subprocess.Popen[bytes]
    log_path: Path
    output: list[str] = field(default_factory=list)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- worker run {self.number} stdout: {self.output}\n--- stderr tail:\n{tail}"


@dataclass
class Stats:
    kills: int = 0
    kills_mid_flight: int = 0
    unfinished_at_kill: list[int] = field(default_factory=list)
    runs: int = 0
    finished_during_kill_phase: bool = False


def _spawn(number: int, database_url: str, ledger: Path, tmp_path: Path, *extra: str) -> WorkerRun:
    log_path = tmp_path / f"worker-{number}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                database_url,
                str(ledger),
                "--sagas",
                str(SAGAS),
                "--run",
                str(number),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
        )
    return WorkerRun(number, process, log_path)


def _read_line(run: WorkerRun, within: float) -> str | None:
    """The next line the worker prints, or None if it printed none within ``within`` s."""
    stdout: IO[bytes] | None = run.process.stdout
    assert stdout is not None
    readable, _, _ = select.select([stdout], [], [], within)
    if not readable:
        return None
    line = stdout.readline().decode(errors="replace").strip()
    run.output.append(line)
    return line


def _wait_ready(run: WorkerRun) -> None:
    line = _read_line(run, READY_WITHIN)
    if line != "ready":
        run.process.kill()
        run.process.wait()
        pytest.fail(
            f"worker run {run.number} did not get ready within {READY_WITHIN:.0f}s "
            f"(printed {line!r})\n{run.log_tail()}"
        )


def _kill(run: WorkerRun) -> None:
    run.process.send_signal(signal.SIGKILL)
    run.process.wait()


def _close(run: WorkerRun) -> None:
    if run.process.poll() is None:
        _kill(run)
    if run.process.stdout is not None:
        run.process.stdout.close()


def _describe_unfinished(reader: SagaManager, limit: int = 5) -> str:
    """The state of a few sagas that have not ended, for a failure message."""
    ended = {
        str(n.originator_id)
        for n in reader.recorder.select_notifications(
            start=1, limit=1_000_000, topics=ENDING_TOPICS
        )
    }
    far = datetime.max.replace(tzinfo=UTC)
    timers = dict(reader.timers.select_due_timers(far, 1_000_000))
    lines: list[str] = []
    for index in range(SAGAS):
        saga_id = saga_id_for(index)
        if str(saga_id) in ended:
            continue
        try:
            saga = reader.get(saga_id)
        except SagaNotFoundError:
            lines.append(f"saga {index}: not started")
            break
        last = [type(e).__name__ for e in reader.history(saga_id)[-3:]]
        lines.append(
            f"saga {index}: {saga.status.value}, wake-up {saga.next_wakeup}, "
            f"timer {timers.get(saga_id)}, last events {last}"
        )
        if len(lines) >= limit:
            break
    return "\n".join(lines)


def _ended(reader: SagaManager) -> int:
    """How many sagas the store says ended (completed, failed or dead-lettered)."""
    found = reader.recorder.select_notifications(start=1, limit=1_000_000, topics=ENDING_TOPICS)
    return len({str(n.originator_id) for n in found})


def test_sigkilled_worker_loses_no_saga_and_dispatches_no_command_twice(
    database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    ledger = tmp_path / "ledger.db"
    stats = Stats()
    # Creates the tables before any worker runs, so workers never race to create them.
    reader = SagaManager([DEFINITION], database_url)
    runs: list[WorkerRun] = []
    try:
        # Run 0 dies inside relay.pump, after the broker confirmed commands the
        # relay has not yet recorded as sent.
        first = _spawn(
            0,
            database_url,
            ledger,
            tmp_path,
            "--crash-after-sends",
            str(INJECTED_CRASH_AFTER_SENDS),
        )
        runs.append(first)
        _wait_ready(first)
        try:
            first.process.wait(timeout=READY_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run 0 did not crash itself as told\n{first.log_tail()}")
        assert first.process.returncode == -signal.SIGKILL, first.log_tail()
        _close(first)

        for number in range(1, RANDOM_KILLS + 1):
            run = _spawn(number, database_url, ledger, tmp_path)
            runs.append(run)
            _wait_ready(run)
            stats.runs += 1
            try:
                run.process.wait(timeout=rng.uniform(0.2, 1.5))
            except subprocess.TimeoutExpired:
                _kill(run)
                stats.kills += 1
                ended = _ended(reader)
                if ended < SAGAS:
                    stats.kills_mid_flight += 1
                    stats.unfinished_at_kill.append(SAGAS - ended)
            else:
                assert run.process.returncode == 0, (
                    f"worker run {number} exited with {run.process.returncode} before "
                    f"it was killed\n{run.log_tail()}"
                )
                stats.finished_during_kill_phase = True
            finally:
                _close(run)
            if stats.finished_during_kill_phase:
                break

        final = _spawn(RANDOM_KILLS + 1, database_url, ledger, tmp_path)
        runs.append(final)
        _wait_ready(final)
        started = time.monotonic()
        try:
            final.process.wait(timeout=FINAL_RUN_WITHIN)
        except subprocess.TimeoutExpired:
            final.process.send_signal(signal.SIGUSR1)  # the worker dumps its stacks
            time.sleep(1.0)
            _close(final)
            pytest.fail(
                f"the last worker run did not bring all {SAGAS} sagas to an end within "
                f"{FINAL_RUN_WITHIN:.0f}s; {_ended(reader)} ended, for example:\n"
                f"{_describe_unfinished(reader)}\n{final.log_tail()}"
            )
        final_seconds = time.monotonic() - started
        assert final.process.returncode == 0, final.log_tail()
        assert final.process.stdout is not None
        final.output.extend(final.process.stdout.read().decode(errors="replace").splitlines())
        _close(final)
    finally:
        for run in runs:
            _close(run)
        reader.close()

    # -- from the stores alone -------------------------------------------------
    manager = SagaManager([DEFINITION], database_url)
    try:
        ids = [saga_id_for(i) for i in range(SAGAS)]
        lost: list[UUID] = []
        statuses: Counter[SagaStatus] = Counter()
        problems: list[str] = []
        dispatched: set[UUID] = set()
        kinds: Counter[str] = Counter()
        for saga_id in ids:
            try:
                events = manager.history(saga_id)
            except SagaNotFoundError:
                lost.append(saga_id)
                continue
            statuses[manager.get(saga_id).status] += 1
            problems.extend(history_problems(saga_id, events, DEFINITION))
            for event in events:
                kinds[type(event).__name__] += 1
                if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
                    dispatched.add(event.command_id)
        started_in_log = manager.recorder.select_notifications(
            start=1, limit=1_000_000, topics=[get_topic(Saga.SagaStarted)]
        )
    finally:
        manager.close()

    assert not lost, f"{len(lost)} sagas were lost, e.g. {lost[:3]}"
    assert sorted(UUID(str(n.originator_id)) for n in started_in_log) == sorted(ids), (
        "the log must hold exactly one SagaStarted per saga (idempotent restarts)"
    )
    assert set(statuses) <= {SagaStatus.COMPLETED, SagaStatus.FAILED}, (
        f"every saga must end COMPLETED or FAILED (none dead-lettered): {dict(statuses)}"
    )
    assert not problems, f"{len(problems)} law violations, first: " + "\n".join(problems[:10])
    # The run exercised what it claims to: compensation, its retries, timeouts.
    assert statuses[SagaStatus.COMPLETED] > 0
    assert statuses[SagaStatus.FAILED] > 0
    assert kinds["CompensationRetryScheduled"] > 0
    assert kinds["StepTimedOut"] > 0

    # -- what the participants saw ---------------------------------------------
    with sqlite3.connect(ledger) as conn:
        queued = conn.execute("SELECT command_id, run FROM queue ORDER BY seq").fetchall()
        unacked = conn.execute("SELECT COUNT(*) FROM queue WHERE acked = 0").fetchone()[0]
        seen = {UUID(row[0]) for row in conn.execute("SELECT command_id FROM seen")}
        duplicates = conn.execute("SELECT command_id FROM duplicates").fetchall()
        replies = Counter(
            dict(conn.execute("SELECT outcome, COUNT(*) FROM replies GROUP BY outcome"))
        )
    queued_ids = Counter(UUID(command_id) for command_id, _ in queued)
    assert set(queued_ids) == dispatched, (
        "every dispatched command reaches the broker, and nothing else does: "
        f"{len(dispatched - set(queued_ids))} never sent, "
        f"{len(set(queued_ids) - dispatched)} unknown"
    )
    assert unacked == 0
    assert seen == dispatched, "the participants acted once on every command"
    resent = sum(count - 1 for count in queued_ids.values())
    assert len(duplicates) >= resent, "every re-sent copy was dropped as a duplicate"
    # Run 0 crashed right after the broker confirmed its last command, inside the
    # relay's batch: that command (and the rest of its batch, a suffix of what
    # run 0 sent) must have been sent again, and dropped by the participants.
    sent_before_crash = [UUID(c) for c, run in queued if run == 0]
    assert len(sent_before_crash) == INJECTED_CRASH_AFTER_SENDS
    resent_after_crash = [queued_ids[c] >= 2 for c in sent_before_crash]
    assert resent_after_crash[-1], (
        "the command the broker confirmed just before the crash, which the relay had not "
        "recorded as sent, must be sent again"
    )
    assert resent_after_crash == sorted(resent_after_crash), (
        "the relay resumes from its recorded position: only a suffix of run 0 is re-sent"
    )
    dropped = Counter(UUID(row[0]) for row in duplicates)
    assert dropped[sent_before_crash[-1]] >= 1
    assert stats.kills_mid_flight >= MIN_KILLS_MID_FLIGHT, (
        f"only {stats.kills_mid_flight} of {stats.kills} kills hit unfinished sagas"
    )

    print(
        f"\ncrash safety: {SAGAS} sagas {dict(statuses)}; 1 injected crash + "
        f"{stats.kills} SIGKILLs ({stats.kills_mid_flight} mid-flight, unfinished sagas at "
        f"kill: {stats.unfinished_at_kill}); commands: {len(dispatched)} dispatched, "
        f"{len(queued)} broker deliveries, {resent} re-sent by the relay, "
        f"{len(duplicates)} duplicates dropped by participants; replies: {dict(replies)}; "
        f"last run {final_seconds:.1f}s; events: {dict(kinds)}"
    )
