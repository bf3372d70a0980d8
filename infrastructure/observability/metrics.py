"""Prometheus metrics derived from the saga log (``pip install 'sagalog[metrics]'``).

:class:`SagaMetrics` owns its metrics in a ``CollectorRegistry`` (a fresh one by
default, never the process-global registry, so two instances or two tests never
clash). Counters and histograms are fed by :meth:`SagaMetrics.observe`, a
handler for :class:`~sagalog.infrastructure.messaging.observer.SagaEventFollower`: the
domain knows nothing about metrics, and every transition is counted once, by
whoever follows the log. Gauges that describe "now" (relay lag, projection lag,
stuck sagas) are computed when Prometheus scrapes.

Metric names (all prefixed ``sagalog_``):

=====================================================  ==========================================
``sagas_started_total{saga_type}``                      ``SagaStarted``
``sagas_completed_total{saga_type}``                    ``SagaCompleted``
``sagas_compensated_total{saga_type}``                  ``SagaFailed`` (failed, fully compensated)
``sagas_dead_lettered_total{saga_type,kind}``           ``SagaDeadLettered``
``step_duration_seconds{saga_type,step,outcome}``       dispatch → completed / failed / timed_out
``compensation_duration_seconds{saga_type,step,outcome}`` dispatch → completed / failed / timed_out
``retries_total{saga_type,step,kind}``                  ``StepRetryScheduled``, ``Compensation…``
``timeouts_total{saga_type,step,kind}``                 ``StepTimedOut``, ``CompensationTimedOut``
``operator_actions_total{saga_type,action}``            retried / resolved / aborted
``replies_dead_lettered_total{error}``                  replies sent to the dead-letter queue
``events_observed_total``                               saga events read from the log
``relay_lag_events``                                    notifications beyond the relay's position
``relay_pending_commands``                              commands recorded but not yet sent
``observer_lag_events``                                 notifications beyond these metrics' position
``projection_lag_events``                               notifications not yet in the read views
``stuck_sagas{reason}``                                 the projections' stuck query, by reason
``steps_in_flight{saga_type,step}``                     sagas with the step in flight (any branch)
``participant_commands_total{service,handling}``        a watched participant's fence, by handling
``participant_commands_refused_total{service,reason}``  commands its fences refused, by reason
=====================================================  ==========================================

Durations use the events' own timestamps (the manager's clock), so they are
right however late the follower reads them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.registry import Collector

from sagalog.domain import Saga
from sagalog.infrastructure.messaging.observer import ObservedEvent
from sagalog.infrastructure.messaging.relay import COMMAND_TOPICS, CommandRelay
from sagalog.infrastructure.services.fencing import Fence, FenceReason, Handling

logger = logging.getLogger("sagalog.metrics")

#: Buckets for step durations: participants answer in milliseconds to minutes.
DURATION_BUCKETS: Sequence[float] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)


#: Pending commands are counted up to this many (a scrape must stay cheap).
_PENDING_LIMIT = 10_000

#: The ``outcome`` label of each event that ends a dispatched command.
_OUTCOMES: dict[type[Saga.Event], str] = {
    Saga.StepCompleted: "completed",
    Saga.StepFailed: "failed",
    Saga.StepTimedOut: "timed_out",
    Saga.CompensationCompleted: "completed",
    Saga.CompensationFailed: "failed",
    Saga.CompensationTimedOut: "timed_out",
}


class HasLag(Protocol):
    """Anything that can say how far behind the log it is (relay, projector, follower)."""

    def lag(self) -> int:
        """Notifications not yet handled."""
        ...


class StuckSagaLike(Protocol):
    """One row of the projections' stuck query: only its reason is used."""

    @property
    def reason(self) -> Any:
        """Why the saga is stuck (an enum or a string)."""
        ...


StuckQuery = Callable[[], Iterable[StuckSagaLike]]


class _ScrapeTimeGauges(Collector):
    """Gauges computed at scrape time from callables; a failing callable is skipped."""

    def __init__(self, metrics: SagaMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for name, doc, source in (
            ("sagalog_relay_lag_events", "Notifications beyond the relay's position.", "relay"),
            (
                "sagalog_observer_lag_events",
                "Notifications beyond the metrics observer's position.",
                "observer",
            ),
            (
                "sagalog_projection_lag_events",
                "Notifications not yet applied to the read views.",
                "projection",
            ),
        ):
            watched = self.metrics.lag_sources.get(source)
            if watched is None:
                continue
            try:
                value = watched.lag()
            except Exception as exc:
                logger.warning("cannot read %s lag: %s", source, exc)
                continue
            yield GaugeMetricFamily(name, doc, value=value)
        relay = self.metrics.relay
        if relay is not None:
            try:
                pending = len(
                    relay.manager.recorder.select_notifications(
                        start=relay.position + 1, limit=_PENDING_LIMIT, topics=COMMAND_TOPICS
                    )
                )
            except Exception as exc:
                logger.warning("cannot count the relay's pending commands: %s", exc)
            else:
                yield GaugeMetricFamily(
                    "sagalog_relay_pending_commands",
                    f"Commands recorded but not yet sent by the relay (counted up to "
                    f"{_PENDING_LIMIT}).",
                    value=pending,
                )
            yield CounterMetricFamily(
                "sagalog_relay_resent_commands",
                "Commands this worker's relay sent again after taking the lease over: at or "
                "below the mark up to which the previous holder had begun to send.",
                value=getattr(relay, "resent", 0),
            )
            yield CounterMetricFamily(
                "sagalog_relay_tracking_failures",
                "Times this worker's relay failed to record its position (the store failed, "
                "or the lease was lost); the batch is sent again.",
                value=getattr(relay, "tracking_failures", 0),
            )
        partitions = self.metrics.reply_partitions
        if partitions is not None:
            try:
                held = len(partitions())
            except Exception as exc:
                logger.warning("cannot read the reply partitions held: %s", exc)
            else:
                yield GaugeMetricFamily(
                    "sagalog_reply_partitions_held",
                    "Reply partitions this worker consumes now.",
                    value=held,
                )
        yield from self._gauges_by_label(
            self.metrics.quarantine_counts,
            "sagalog_quarantined_events",
            "Poison events set aside by a follower (sagalog quarantine list), by follower.",
            "follower",
        )
        yield from self._gauges_by_label(
            self.metrics.dead_letter_depths,
            "sagalog_dead_letter_messages",
            "Messages waiting in a dead-letter queue, by queue.",
            "queue",
        )
        yield from self._steps_in_flight()
        query = self.metrics.stuck_query
        if query is None:
            return
        try:
            counts = dict.fromkeys(self.metrics.stuck_reasons, 0)
            for row in query():
                reason = str(getattr(row.reason, "value", row.reason))
                counts[reason] = counts.get(reason, 0) + 1
        except Exception as exc:
            logger.warning("cannot run the stuck query: %s", exc)
            return
        family = GaugeMetricFamily(
            "sagalog_stuck_sagas", "Sagas the stuck query reports, by reason.", labels=["reason"]
        )
        for reason, count in sorted(counts.items()):
            family.add_metric([reason], count)
        yield family

    def _steps_in_flight(self) -> Iterator[Metric]:
        source = self.metrics.steps_in_flight
        if source is None:
            return
        try:
            counts = source()
        except Exception as exc:
            logger.warning("cannot count the steps in flight: %s", exc)
            return
        family = GaugeMetricFamily(
            "sagalog_steps_in_flight",
            "Sagas with the step in flight now, by saga type and step (every branch of a "
            "parallel saga counts).",
            labels=["saga_type", "step"],
        )
        for (saga_type, step), count in sorted(counts.items()):
            family.add_metric([saga_type, step], count)
        yield family

    @staticmethod
    def _gauges_by_label(
        source: Callable[[], dict[str, int]] | None, name: str, doc: str, label: str
    ) -> Iterator[Metric]:
        if source is None:
            return
        try:
            counts = source()
        except Exception as exc:
            logger.warning("cannot read %s: %s", name, exc)
            return
        family = GaugeMetricFamily(name, doc, labels=[label])
        for key, count in sorted(counts.items()):
            family.add_metric([key], count)
        yield family


class _FenceCounts(Collector):
    """Each watched participant's fence counts, read at scrape time."""

    def __init__(self, metrics: SagaMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        handled = CounterMetricFamily(
            "sagalog_participant_commands",
            "Commands a participant answered, by how: executed, duplicate, repeated, refused.",
            labels=["service", "handling"],
        )
        refused = CounterMetricFamily(
            "sagalog_participant_commands_refused",
            "Commands a participant's fences refused (answered failed, not executed).",
            labels=["service", "reason"],
        )
        for service, fence in sorted(self.metrics.fences.items()):
            for handling in Handling:
                handled.add_metric([service, handling.value], fence.counts[handling])
            for reason in FenceReason:
                refused.add_metric([service, reason.value], fence.refused[reason])
        yield handled
        yield refused


class SagaMetrics:
    """sagalog's Prometheus metrics, in a registry of their own."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = DURATION_BUCKETS,
        max_open_dispatches: int = 100_000,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.started = Counter("sagalog_sagas_started", "Sagas started.", ["saga_type"], registry=r)
        self.completed = Counter(
            "sagalog_sagas_completed", "Sagas that completed.", ["saga_type"], registry=r
        )
        self.compensated = Counter(
            "sagalog_sagas_compensated",
            "Sagas that failed and were fully compensated.",
            ["saga_type"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "sagalog_sagas_dead_lettered",
            "Sagas dead-lettered (waiting for an operator).",
            ["saga_type", "kind"],
            registry=r,
        )
        self.step_duration = Histogram(
            "sagalog_step_duration_seconds",
            "From a step's dispatch to its outcome.",
            ["saga_type", "step", "outcome"],
            buckets=buckets,
            registry=r,
        )
        self.compensation_duration = Histogram(
            "sagalog_compensation_duration_seconds",
            "From a compensation's dispatch to its outcome.",
            ["saga_type", "step", "outcome"],
            buckets=buckets,
            registry=r,
        )
        self.retries = Counter(
            "sagalog_retries",
            "Retries scheduled, of actions and compensations.",
            ["saga_type", "step", "kind"],
            registry=r,
        )
        self.timeouts = Counter(
            "sagalog_timeouts",
            "Actions and compensations that timed out.",
            ["saga_type", "step", "kind"],
            registry=r,
        )
        self.operator_actions = Counter(
            "sagalog_operator_actions",
            "Operator actions: retried, resolved, aborted.",
            ["saga_type", "action"],
            registry=r,
        )
        self.replies_dead_lettered = Counter(
            "sagalog_replies_dead_lettered",
            "Replies sent to the dead-letter queue, by error type.",
            ["error"],
            registry=r,
        )
        self.events_observed = Counter(
            "sagalog_events_observed", "Saga events read from the log.", registry=r
        )
        self.active = Gauge(
            "sagalog_worker_active",
            "1 while this worker holds the store's lease (runs the relay, timers and "
            "projections), 0 while it stands by.",
            registry=r,
        )
        self.lease_epoch = Gauge(
            "sagalog_lease_epoch", "The epoch of the lease this worker held last.", registry=r
        )
        self.lease_changes = Counter(
            "sagalog_lease_changes",
            "This worker's role changes: acquired (standby to active) or lost (active to standby).",
            ["change"],
            registry=r,
        )
        self.lag_sources: dict[str, HasLag] = {}
        self.relay: CommandRelay | None = None
        self.stuck_query: StuckQuery | None = None
        self.quarantine_counts: Callable[[], dict[str, int]] | None = None
        self.dead_letter_depths: Callable[[], dict[str, int]] | None = None
        self.reply_partitions: Callable[[], Sequence[int]] | None = None
        self.stuck_reasons: tuple[str, ...] = ()
        self.steps_in_flight: Callable[[], dict[tuple[str, str], int]] | None = None
        self.fences: dict[str, Fence] = {}
        self.registry.register(_ScrapeTimeGauges(self))
        self.registry.register(_FenceCounts(self))
        self._dispatched: OrderedDict[tuple[UUID, str, str], datetime] = OrderedDict()
        self._max_open = max_open_dispatches
        self._lock = threading.Lock()

    # -- feeding ---------------------------------------------------------------------

    def observe(self, observed: ObservedEvent) -> None:
        """Count one saga event (the handler to give a ``SagaEventFollower``)."""
        event, saga_type = observed.event, observed.saga_type
        with self._lock:
            self.events_observed.inc()
            self._count(event, saga_type)

    def _count(self, event: Saga.Event, saga_type: str) -> None:
        saga_id = event.originator_id
        if isinstance(event, Saga.SagaStarted):
            self.started.labels(saga_type).inc()
        elif isinstance(event, Saga.StepDispatched):
            self._open(saga_id, event.step, "action", event.timestamp)
        elif isinstance(event, Saga.CompensationDispatched):
            self._open(saga_id, event.step, "compensation", event.timestamp)
        elif isinstance(event, Saga.StepCompleted | Saga.StepFailed | Saga.StepTimedOut):
            self._close(saga_id, saga_type, event, "action", self.step_duration)
            if isinstance(event, Saga.StepTimedOut):
                self.timeouts.labels(saga_type, event.step, "action").inc()
        elif isinstance(
            event,
            Saga.CompensationCompleted | Saga.CompensationFailed | Saga.CompensationTimedOut,
        ):
            self._close(saga_id, saga_type, event, "compensation", self.compensation_duration)
            if isinstance(event, Saga.CompensationTimedOut):
                self.timeouts.labels(saga_type, event.step, "compensation").inc()
        elif isinstance(event, Saga.StepRetryScheduled):
            self.retries.labels(saga_type, event.step, "action").inc()
        elif isinstance(event, Saga.CompensationRetryScheduled):
            self.retries.labels(saga_type, event.step, "compensation").inc()
        elif isinstance(event, Saga.SagaCompleted):
            self.completed.labels(saga_type).inc()
            self._forget(saga_id)
        elif isinstance(event, Saga.SagaFailed):
            self.compensated.labels(saga_type).inc()
            self._forget(saga_id)
        elif isinstance(event, Saga.SagaDeadLettered):
            self.dead_lettered.labels(saga_type, event.kind).inc()
        elif isinstance(event, Saga.OperatorRetried):
            self.operator_actions.labels(saga_type, "retried").inc()
        elif isinstance(event, Saga.OperatorResolved):
            self.operator_actions.labels(saga_type, "resolved").inc()
        elif isinstance(event, Saga.SagaAborted):
            self.operator_actions.labels(saga_type, "aborted").inc()

    def _open(self, saga_id: UUID, step: str, kind: str, at: datetime) -> None:
        self._dispatched[(saga_id, step, kind)] = at
        while len(self._dispatched) > self._max_open:
            self._dispatched.popitem(last=False)

    def _close(
        self, saga_id: UUID, saga_type: str, event: Any, kind: str, histogram: Histogram
    ) -> None:
        started = self._dispatched.pop((saga_id, event.step, kind), None)
        if started is None:
            return  # dispatched before this observer started: duration unknown
        outcome = _OUTCOMES[type(event)]
        seconds = max(0.0, (event.timestamp - started).total_seconds())
        histogram.labels(saga_type, event.step, outcome).observe(seconds)

    def _forget(self, saga_id: UUID) -> None:
        for key in [k for k in self._dispatched if k[0] == saga_id]:
            del self._dispatched[key]

    def reply_dead_lettered(self, error: BaseException | str | None) -> None:
        """Count a reply sent to the dead-letter queue (``ReplyConsumer.on_dead_letter``)."""
        name = error if isinstance(error, str) else type(error).__name__ if error else "none"
        self.replies_dead_lettered.labels(name).inc()

    def role_changed(self, active: bool, epoch: int) -> None:
        """Record that this worker took (``active``) or lost the store's lease at ``epoch``."""
        self.active.set(1 if active else 0)
        self.lease_epoch.set(epoch)
        self.lease_changes.labels("acquired" if active else "lost").inc()

    # -- scrape-time gauges ----------------------------------------------------------

    def watch_relay(self, relay: CommandRelay) -> None:
        """Report the relay's lag and its pending commands at scrape time.

        ``relay_lag_events`` is ``relay.lag()``: the commands recorded but not yet
        sent, so it falls to zero on an idle system. ``relay_pending_commands``
        reports the same count; either is fit to alert on.
        """
        self.relay = relay
        self.watch_lag("relay", relay)

    def watch_lag(self, source: str, watched: HasLag) -> None:
        """Report ``watched.lag()`` at scrape time: ``relay``, ``observer`` or ``projection``."""
        if source not in ("relay", "observer", "projection"):
            raise ValueError(f"unknown lag source {source!r}")
        self.lag_sources[source] = watched

    def watch_reply_partitions(self, held: Callable[[], Sequence[int]]) -> None:
        """Report ``len(held())`` (the reply partitions this worker consumes) at scrape time."""
        self.reply_partitions = held

    def watch_quarantine(self, counts: Callable[[], dict[str, int]]) -> None:
        """Report ``counts()`` (quarantined events per follower) at scrape time."""
        self.quarantine_counts = counts

    def watch_dead_letters(self, depths: Callable[[], dict[str, int]]) -> None:
        """Report ``depths()`` (messages per dead-letter queue) at scrape time."""
        self.dead_letter_depths = depths

    def watch_stuck(self, query: StuckQuery, reasons: Iterable[Any] = ()) -> None:
        """Report the rows of ``query()`` by reason at scrape time (zero for ``reasons``).

        With the projections: ``metrics.watch_stuck(views.stuck, StuckReason)``.
        """
        self.stuck_query = query
        self.stuck_reasons = tuple(str(getattr(r, "value", r)) for r in reasons)

    def watch_steps_in_flight(self, counts: Callable[[], dict[tuple[str, str], int]]) -> None:
        """Report ``counts()`` (sagas per saga type and step in flight) at scrape time.

        With the projections: ``metrics.watch_steps_in_flight(views.steps_in_flight_counts)``.
        Labels are saga types and step names, bounded by the definitions.
        """
        self.steps_in_flight = counts

    def watch_fence(self, service: str, fence: Fence) -> None:
        """Report ``fence``'s counts at scrape time, labelled ``service``.

        For a RabbitMQ participant: ``metrics.watch_fence("bank", participant.fence)``.
        """
        self.fences[service] = fence

    # -- exposing ------------------------------------------------------------------------

    def serve(
        self,
        port: int,
        addr: str = "127.0.0.1",
        *,
        health: Callable[[], dict[str, Any]] | None = None,
    ) -> MetricsServer:
        """Serve ``/metrics`` on ``addr:port`` (port 0: any free port) in a daemon thread.

        With ``health``, ``/health`` answers its report as JSON: 200 when its ``status``
        is ``ok``, 503 otherwise (see :mod:`sagalog.infrastructure.observability.health`).
        """
        if health is None:
            server, thread = start_http_server(port, addr=addr, registry=self.registry)
            return MetricsServer(server, thread)
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            if environ.get("PATH_INFO") != "/health":
                served: Iterable[bytes] = metrics_app(environ, start_response)
                return served
            report = health()
            body = json.dumps(report).encode()
            status = "200 OK" if report.get("status") == "ok" else "503 Service Unavailable"
            start_response(
                status,
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]

        httpd = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        return MetricsServer(httpd, thread)


class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """The address to scrape."""
        host = self.server.server_address[0]
        name = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{name}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
