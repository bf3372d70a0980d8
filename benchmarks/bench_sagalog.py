"""sagalog's side of the benchmarks: throughput, commits, latency, replay, profile, memory.

The wiring is the demo's (``sagalog.infrastructure.demo.runner``) without its simulated
clock and failures: a real ``SagaManager`` on the database under test, the real
``CommandRelay`` following the manager's log, the ``InProcessTransport``, and
participants that answer every command at once. The driver starts every saga,
then repeats "relay drains the log → transport delivers → participants reply"
until nothing moves, so all sagas are in flight together.

Batched (the default): the sagas are started with ``manager.start_many`` and
the participants' replies of one delivery round are handed to
``manager.handle_many``, which commits up to ``max_batch_size`` (500) sagas'
transitions per transaction. One by one (``batched=False``): ``manager.start``
per saga and one ``handle_*`` call, hence one transaction, per reply.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

from bench_common import (
    BENCH_DEFINITION,
    BENCH_PARALLEL_DEFINITION,
    FAILING_STEP,
    current_rss_mib,
    peak_rss_mib,
    percentile,
    saga_data,
    step_result,
)
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from sagalog.domain import Command, CommandKind, Saga, SagaDefinition
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.messaging.transport import InProcessTransport
from sagalog.process import Reply, SagaManager
from sagalog.process.manager import fold_events

SAGA_TYPE = BENCH_DEFINITION.name
#: The saga shapes ``throughput`` runs (``params['shape']``): the 4 steps one after the
#: other, or three steps in parallel (``run.py --parallel``).
SHAPES: dict[str, SagaDefinition] = {
    "linear": BENCH_DEFINITION,
    "parallel": BENCH_PARALLEL_DEFINITION,
}
ENDING_TOPICS = {
    "a": get_topic(Saga.SagaCompleted),
    "b": get_topic(Saga.SagaFailed),
}


class Participants:
    """Every service at once: answers each command immediately, through the manager.

    Batched, the replies are queued and :meth:`flush` hands them to
    ``manager.handle_many``; otherwise each is handled at once, one transaction each.
    """

    def __init__(self, manager: SagaManager, scenario: str, *, batched: bool = True) -> None:
        self.manager = manager
        self.fail_step = FAILING_STEP if scenario == "b" else None
        self.batched = batched
        self.replies = 0
        self.queued: list[Reply] = []

    def reply_to(self, command: Command) -> Reply:
        """The reply a participant sends for ``command``."""
        failed = command.kind is CommandKind.ACTION and command.step == self.fail_step
        if failed:
            return Reply.to(command, error="declined")
        return Reply.to(command, result=step_result(str(command.command_id)))

    def flush(self) -> int:
        """Hand the queued replies to ``manager.handle_many``; return how many."""
        queued, self.queued = self.queued, []
        if queued:
            for reply, result in zip(queued, self.manager.handle_many(queued), strict=True):
                if isinstance(result, Exception):
                    raise RuntimeError(f"reply {reply.message_id} was refused: {result!r}")
        return len(queued)

    def handle(self, command: Command) -> None:
        """Reply to ``command`` (the manager records the outcome and the next command)."""
        self.replies += 1
        if self.batched:
            self.queued.append(self.reply_to(command))
            return
        message_id = f"{command.command_id}:reply"
        if command.kind is CommandKind.ACTION:
            if command.step == self.fail_step:
                self.manager.handle_step_failed(
                    command.saga_id,
                    command.step,
                    "declined",
                    message_id=message_id,
                    attempt=command.attempt,
                )
            else:
                self.manager.handle_step_completed(
                    command.saga_id,
                    command.step,
                    step_result(str(command.command_id)),
                    message_id=message_id,
                    attempt=command.attempt,
                )
        else:
            self.manager.handle_compensation_completed(
                command.saga_id, command.step, message_id=message_id, attempt=command.attempt
            )


def close_relay(relay: CommandRelay) -> None:
    """Close the relay's own connection pool."""
    relay.close()


def open_stack(
    url: str,
    scenario: str,
    env: Mapping[str, str] | None = None,
    *,
    batched: bool = True,
    definition: SagaDefinition = BENCH_DEFINITION,
) -> tuple[SagaManager, CommandRelay, InProcessTransport, Participants]:
    """A manager on ``url``, its relay, an in-process transport and the participants."""
    manager = SagaManager([definition], url, env=env)
    transport = InProcessTransport()
    participants = Participants(manager, scenario, batched=batched)
    transport.subscribe_all(participants.handle)
    relay = CommandRelay(manager, transport)
    return manager, relay, transport, participants


def drive(
    manager: SagaManager,
    relay: CommandRelay,
    transport: InProcessTransport,
    participants: Participants,
    n: int,
    first: int = 0,
    saga_type: str = SAGA_TYPE,
) -> list[UUID]:
    """Start ``n`` sagas, then pump, deliver and reply until every saga has ended."""
    datas = [saga_data(first + i) for i in range(n)]
    if participants.batched:
        ids = manager.start_many(saga_type, datas)
    else:
        ids = [manager.start(saga_type, data) for data in datas]
    while True:
        relay.drain()
        if transport.deliver() == 0:
            return ids
        participants.flush()


def count_endings(manager: SagaManager, scenario: str) -> int:
    """How many sagas ended as the scenario expects (read from the notification log)."""
    ended = 0
    position = 0
    topic = ENDING_TOPICS[scenario]
    while True:
        found = manager.recorder.select_notifications(
            start=position + 1, limit=5000, topics=[topic]
        )
        if not found:
            return ended
        ended += len(found)
        position = found[-1].id


def throughput(params: dict[str, Any]) -> dict[str, Any]:
    """Scenario ``params['scenario']`` for ``params['n']`` sagas on ``params['url']``."""
    url: str = params["url"]
    scenario: str = params["scenario"]
    n: int = params["n"]
    env: dict[str, str] | None = params.get("env")
    batched: bool = params.get("batched", True)
    definition = SHAPES[params.get("shape", "linear")]
    manager, relay, transport, participants = open_stack(
        url, scenario, env, batched=batched, definition=definition
    )
    try:
        gc.collect()
        started = time.perf_counter()
        cpu_started = time.process_time()
        drive(manager, relay, transport, participants, n, saga_type=definition.name)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        ended = count_endings(manager, scenario) if n else 0
        events = manager.recorder.max_notification_id() or 0
        table = getattr(manager.recorder, "events_table_name", None)
        timers = getattr(manager.recorder, "timers_table_name", None)
        relay_table = getattr(relay.tracking, "tracking_table_name", None)
    finally:
        close_relay(relay)
        manager.close()
    return {
        "n": n,
        "seconds": seconds,
        "sagas_per_s": n / seconds if n and seconds else None,
        "cpu_seconds": cpu_seconds,
        "ended_as_expected": ended,
        "events": events,
        "replies": participants.replies,
        "batched": batched,
        "tables": {"events": table, "timers": timers, "relay_tracking": relay_table},
    }


# -- (d) latency ------------------------------------------------------------------


class TimedTransport(InProcessTransport):
    """Notes when a command of a saga is accepted, to pair it with the reply before it."""

    def __init__(self) -> None:
        super().__init__()
        self.reply_at: dict[UUID, float] = {}
        self.samples: list[float] = []

    def send(self, command: Command) -> None:
        super().send(command)
        now = time.perf_counter()
        handed = self.reply_at.pop(command.saga_id, None)
        if handed is not None:
            self.samples.append(now - handed)


def latency(params: dict[str, Any]) -> dict[str, Any]:
    """Reply handed to the manager → next command accepted by the transport, at a fixed load.

    Sagas start at ``rate`` per second (open loop: on a fixed schedule, whatever
    the system does); the sagas due when the driver comes round start together
    (``start_many``). Participants queue their reply the moment a command is
    delivered; the driver hands all replies queued so far to the manager in one
    ``handle_many`` call (one transaction), as a reply consumer would. Mode
    ``inline``: the driver pumps the relay right after each write (the
    pipeline's own latency). Mode ``thread``: the relay runs in its own thread,
    polling every ``poll`` seconds when idle (``CommandRelay.run``). Scenario a.
    """
    url: str = params["url"]
    rate: float = params["rate"]
    n: int = params["n"]
    mode: str = params["mode"]
    poll: float = params.get("poll", 0.002)
    manager = SagaManager([BENCH_DEFINITION], url)
    transport = TimedTransport()
    inbox: deque[Command] = deque()
    transport.subscribe_all(inbox.append)
    replier = Participants(manager, "a")
    relay = CommandRelay(manager, transport)
    stop = threading.Event()
    worker: threading.Thread | None = None
    if mode == "thread":
        worker = threading.Thread(
            target=relay.run, args=(stop,), kwargs={"poll_interval": poll}, daemon=True
        )
        worker.start()
    completed = 0
    started_sagas = 0
    lag_max = 0.0
    try:
        begin = time.perf_counter()
        interval = 1.0 / rate
        while completed < n:
            recorded = False
            now = time.perf_counter()
            due_by_now = min(n, int((now - begin) / interval) + 1)
            if due_by_now > started_sagas:
                lag_max = max(lag_max, now - (begin + started_sagas * interval))
                # The sagas due by now start together (start_many: one transaction).
                datas = [saga_data(i) for i in range(started_sagas, due_by_now)]
                manager.start_many(SAGA_TYPE, datas)
                started_sagas = due_by_now
                recorded = True
            if inbox:
                # Every reply queued so far goes to the manager at once (handle_many).
                commands = list(inbox)
                inbox.clear()
                handed = time.perf_counter()
                for command in commands:
                    transport.reply_at[command.saga_id] = handed
                results = manager.handle_many([replier.reply_to(c) for c in commands])
                assert not any(isinstance(r, Exception) for r in results), results
                for command in commands:
                    if command.step == "send_confirmation":
                        transport.reply_at.pop(command.saga_id, None)
                        completed += 1
                recorded = True
            if recorded and mode == "inline":
                relay.pump()
            transport.deliver()
            if not recorded and not inbox:
                time.sleep(0.0002)
        seconds = time.perf_counter() - begin
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=10)
        close_relay(relay)
        manager.close()
    samples = sorted(transport.samples)
    return {
        "mode": mode,
        "rate": rate,
        "poll": poll if mode == "thread" else None,
        "n": n,
        "samples": len(samples),
        "achieved_sagas_per_s": n / seconds,
        "max_start_lag_ms": lag_max * 1000,
        "p50_ms": percentile(samples, 50) * 1000,
        "p90_ms": percentile(samples, 90) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "max_ms": samples[-1] * 1000 if samples else None,
    }


# -- (e) replay -------------------------------------------------------------------

#: eventsourcing's own transcoder and mapper: the baseline rows of the replay.
REFERENCE_TRANSCODER_ENV = {
    "TRANSCODER_TOPIC": "eventsourcing.persistence:JSONTranscoder",
    "MAPPER_TOPIC": "eventsourcing.persistence:Mapper",
}


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def replay(params: dict[str, Any]) -> dict[str, Any]:
    """Rebuild stored sagas: ``manager.get`` per saga, and its parts, in events per second.

    ``get``: ``manager.get(saga_id)`` for every stored saga (read + decode + apply).
    ``get_many``: ``manager.get_many(ids)`` over all of them (one query per 500
    sagas, then decode + apply): the bulk rebuild.
    ``select``: ``recorder.select_events`` only (the database read).
    ``decode``: ``mapper.to_domain_event`` over events already read (the transcoder).
    ``decode_apply``: decode, then the manager's ``fold_events`` (rebuild without I/O).
    ``log_scan``: the notification log read in pages of 1000 and decoded, as
    projections and the relay read it.
    ``get_many_reference`` and ``decode_reference``: the same as ``get_many`` and
    ``decode``, by managers on the same stores that use eventsourcing's own
    ``JSONTranscoder`` and ``Mapper`` (the baseline of ``FastJSONTranscoder``),
    measured in the same repetition.
    """
    urls: list[str] = params["urls"]
    reps: int = params.get("reps", 3)
    results: dict[str, list[float]] = {
        "get": [],
        "get_many": [],
        "select": [],
        "decode": [],
        "decode_apply": [],
        "log_scan": [],
        "get_many_reference": [],
        "decode_reference": [],
    }
    totals = {"sagas": 0, "events": 0}
    managers = [SagaManager([BENCH_DEFINITION], url) for url in urls]
    references = {
        manager: SagaManager([BENCH_DEFINITION], url, env=REFERENCE_TRANSCODER_ENV)
        for manager, url in zip(managers, urls, strict=True)
    }
    try:
        ids: list[tuple[SagaManager, UUID]] = []
        for manager in managers:
            seen: dict[UUID, None] = {}
            position = 0
            while True:
                page = manager.recorder.select_notifications(start=position + 1, limit=5000)
                if not page:
                    break
                for notification in page:
                    if isinstance(notification.originator_id, UUID):
                        seen.setdefault(notification.originator_id, None)
                position = page[-1].id
            ids.extend((manager, saga_id) for saga_id in seen)
            totals["events"] += position
        totals["sagas"] = len(ids)
        events = totals["events"]
        for _ in range(reps):
            gc.collect()
            t = time.perf_counter()
            for manager, saga_id in ids:
                manager.get(saga_id)
            results["get"].append(_rate(events, time.perf_counter() - t))

            gc.collect()
            t = time.perf_counter()
            rebuilt = 0
            for manager in managers:
                rebuilt += len(manager.get_many(s for m, s in ids if m is manager))
            results["get_many"].append(_rate(events, time.perf_counter() - t))
            assert rebuilt == len(ids), (rebuilt, len(ids))

            gc.collect()
            t = time.perf_counter()
            rebuilt = 0
            for manager, reference in references.items():
                rebuilt += len(reference.get_many(s for m, s in ids if m is manager))
            results["get_many_reference"].append(_rate(events, time.perf_counter() - t))
            assert rebuilt == len(ids), (rebuilt, len(ids))

            stored: list[tuple[SagaManager, list[StoredEvent]]] = []
            t = time.perf_counter()
            for manager, saga_id in ids:
                stored.append((manager, list(manager.recorder.select_events(saga_id))))
            results["select"].append(_rate(events, time.perf_counter() - t))

            t = time.perf_counter()
            for manager, rows in stored:
                to_domain_event = manager.mapper.to_domain_event
                for row in rows:
                    to_domain_event(row)
            results["decode"].append(_rate(events, time.perf_counter() - t))

            t = time.perf_counter()
            for manager, rows in stored:
                to_domain_event = references[manager].mapper.to_domain_event
                for row in rows:
                    to_domain_event(row)
            results["decode_reference"].append(_rate(events, time.perf_counter() - t))

            t = time.perf_counter()
            for manager, rows in stored:
                to_domain_event = manager.mapper.to_domain_event
                saga = fold_events(None, [to_domain_event(row) for row in rows])
                assert isinstance(saga, Saga)
            results["decode_apply"].append(_rate(events, time.perf_counter() - t))

            t = time.perf_counter()
            scanned = 0
            for manager in managers:
                position = 0
                to_domain_event = manager.mapper.to_domain_event
                while True:
                    page = manager.recorder.select_notifications(start=position + 1, limit=1000)
                    if not page:
                        break
                    for notification in page:
                        to_domain_event(notification)
                    scanned += len(page)
                    position = page[-1].id
            results["log_scan"].append(_rate(scanned, time.perf_counter() - t))
    finally:
        for manager in [*managers, *references.values()]:
            manager.close()
    return {"totals": totals, "events_per_s": results}


# -- profile ----------------------------------------------------------------------


class StatementCounter:
    """Counts the SQL statements, transactions and pipeline syncs a run sends.

    Wraps ``execute``/``executemany`` of psycopg's ``Cursor`` and of
    eventsourcing's ``SQLiteCursor`` (by the statement's first word), psycopg's
    ``Transaction.__exit__`` and ``Pipeline.sync``/``__exit__`` (each pipeline
    sync is a round trip to the server), and SQLite commits. Class-level patches,
    undone by :meth:`undo`; for measurement only.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _wrap(self, owner: Any, name: str, key: Callable[..., str]) -> None:
        original = getattr(owner, name)
        counter = self

        def wrapper(this: Any, *args: Any, **kwargs: Any) -> Any:
            counter._count(key(this, *args, **kwargs))
            return original(this, *args, **kwargs)

        self._undo.append((owner, name, original))
        setattr(owner, name, wrapper)

    def install(self) -> None:
        import psycopg
        from eventsourcing import sqlite as es_sqlite

        def first_word(this: Any, query: Any = "", *_a: Any, **_k: Any) -> str:
            text = query
            if not isinstance(query, str | bytes):
                try:
                    text = query.as_string(this)
                except Exception:
                    text = str(query)
            if isinstance(text, bytes):
                text = text.decode(errors="replace")
            word = text.strip().split(None, 1)[0].upper() if text.strip() else "?"
            return f"stmt:{word}"

        def fixed(name: str) -> Callable[..., str]:
            return lambda *_a, **_k: name

        self._wrap(psycopg.Cursor, "execute", first_word)
        self._wrap(psycopg.Cursor, "executemany", first_word)
        self._wrap(psycopg.Transaction, "__exit__", fixed("transaction"))
        self._wrap(psycopg.Pipeline, "sync", fixed("pipeline_sync"))
        self._wrap(psycopg.Pipeline, "__exit__", fixed("pipeline_exit"))
        self._wrap(es_sqlite.SQLiteCursor, "execute", first_word)
        self._wrap(es_sqlite.SQLiteCursor, "executemany", first_word)
        self._wrap(es_sqlite.SQLiteConnection, "commit", fixed("transaction"))

    def undo(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def profile(params: dict[str, Any]) -> dict[str, Any]:
    """Scenario a under cProfile; writes the report and returns the top entries."""
    url: str = params["url"]
    n: int = params["n"]
    out = Path(params["out"])
    manager, relay, transport, participants = open_stack(url, "a")
    profiler = cProfile.Profile()
    counter = StatementCounter()
    try:
        counter.install()
        started = time.perf_counter()
        profiler.enable()
        drive(manager, relay, transport, participants, n)
        profiler.disable()
        seconds = time.perf_counter() - started
    finally:
        counter.undo()
        close_relay(relay)
        manager.close()
    transitions = n * 5
    per_transition = {
        key: round(value / transitions, 3) for key, value in sorted(counter.counts.items())
    }
    stats = pstats.Stats(profiler)
    text = io.StringIO()
    report = pstats.Stats(profiler, stream=text)
    report.sort_stats("cumulative").print_stats(45)
    report.sort_stats("tottime").print_stats(30)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.getvalue())
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    rows: list[dict[str, Any]] = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        rows.append(
            {
                "function": f"{_short_path(filename)}:{line}({func})",
                "ncalls": ncalls,
                "tottime_s": tottime,
                "cumtime_s": cumtime,
            }
        )
    rows.sort(key=lambda r: r["cumtime_s"], reverse=True)
    by_self = sorted(rows, key=lambda r: r["tottime_s"], reverse=True)[:20]
    return {
        "n": n,
        "seconds_profiled": seconds,
        "total_self_s": total,
        "per_transition": per_transition,
        "top_cumulative": rows[:45],
        "top_self": by_self,
        "report": str(out),
    }


def _short_path(filename: str) -> str:
    if "/tree/sagalog/" in filename:
        return "sagalog/" + filename.split("/tree/sagalog/", 1)[1]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- memory -----------------------------------------------------------------------


def memory(params: dict[str, Any]) -> dict[str, Any]:
    """Peak and current RSS while one manager handles ``n`` sagas, sampled at checkpoints.

    The sagas run in windows of ``window`` (all in flight together, then the next
    window), so the driver's own bookkeeping stays bounded and what grows is the
    manager's (and the libraries' it uses).
    """
    url: str = params["url"]
    n: int = params["n"]
    window: int = params.get("window", 1000)
    checkpoints: list[int] = sorted(params.get("checkpoints", [n]))
    manager, relay, transport, participants = open_stack(url, "a")
    samples: list[dict[str, float]] = []
    done = 0
    gc.collect()
    samples.append(
        {"sagas": 0, "rss_mib": current_rss_mib(), "peak_rss_mib": peak_rss_mib(), "seconds": 0.0}
    )
    started = time.perf_counter()
    try:
        pending = list(checkpoints)
        while done < n:
            size = min(window, n - done)
            drive(manager, relay, transport, participants, size, first=done)
            done += size
            if pending and done >= pending[0]:
                pending.pop(0)
                gc.collect()
                samples.append(
                    {
                        "sagas": done,
                        "rss_mib": current_rss_mib(),
                        "peak_rss_mib": peak_rss_mib(),
                        "seconds": time.perf_counter() - started,
                    }
                )
    finally:
        close_relay(relay)
        manager.close()
    return {"url_kind": url.split(":", 1)[0], "window": window, "samples": samples}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "sagalog.throughput": throughput,
    "sagalog.latency": latency,
    "sagalog.replay": replay,
    "sagalog.profile": profile,
    "sagalog.memory": memory,
}
