"""``sagalog worker``: the timers, the command relay and the projections, in one process.

Three loops, each in its own thread, all stopped by one ``threading.Event``:

* **timers** — ``SagaManager.run``: every ``tick_interval`` the due timeouts and
  retries are fired (each saga's transition is its own transaction);
* **relay** — the :class:`~sagalog.infrastructure.messaging.relay.CommandRelay` hands the
  commands recorded in the log to a transport (and, for the in-process
  transport, delivers them to the registered participants). It runs only when a
  transport is configured;
* **projections** — a :class:`~sagalog.projections.SagaProjector` keeps the
  summary and timeline tables up with the log, many events per transaction;
* **replies** (with ``replies``, e.g. the RabbitMQ
  :class:`~sagalog.infrastructure.rabbitmq.replies.ReplyConsumer`) — consumes participants'
  replies in batches of what the broker has delivered, one transaction per batch
  (``SagaManager.handle_many``), acknowledging them after it committed;
* **metrics** (with ``metrics_port``) — a follower of the log feeds
  :class:`~sagalog.infrastructure.observability.metrics.SagaMetrics`, served on ``/metrics``
  with the relay and projection lags and the stuck sagas by reason (needs the
  ``metrics`` extra, prometheus-client).

**Roles.** Every worker on a shared store (SQLite, PostgreSQL) takes part in the store's
lease (:mod:`sagalog.infrastructure.persistence.lease`): the holder is *active* and runs
the timers, the relay and the projections; the others are *standbys* (the reply consumer
and the metrics run in every worker) and take over when the holder's lease expires. The
relay sends under the holder's lease term, fenced by its epoch. Every worker writes a
heartbeat row (:mod:`sagalog.infrastructure.persistence.heartbeats`) that ``sagalog
workers`` lists, and consumes its share of the reply partitions, split among the live
rows. See docs/worker.md and docs/deployment.md.

The default is **no transport**: the worker ticks the timers and keeps the
projections up, and the relay does not run. Commands are not lost — they stay
in the log (the log is the outbox) and the relay's tracked position does not
move, so a worker started later with a transport delivers every one of them.
A worker without a transport is what you want next to a broker relay that
runs elsewhere, or while the participants are down; the demo's simulated
participants are not part of the worker (they live in ``sagalog demo``).

Shutdown: SIGINT or SIGTERM (or :meth:`Worker.stop`) sets the stop event and
nothing else — a signal never interrupts a thread. Each loop finishes the unit
it is in (one tick, one relay batch, one projection batch — each committed
whole or not at all — or one batch of replies, acked once committed) and
returns; the worker joins the threads, closes its connections and exits 0. If
a loop fails for good (anything but the transient database and transport
errors the loops retry themselves), the others are stopped too and the worker
exits 1.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from eventsourcing.persistence import PersistenceError

from sagalog.domain.errors import SagalogError, first_line
from sagalog.infrastructure.messaging.observer import SagaEventFollower
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.messaging.transport import InProcessTransport, Transport, TransportError
from sagalog.infrastructure.observability.health import DependencyHealth, probe_store
from sagalog.infrastructure.persistence.heartbeats import (
    WorkerBeat,
    WorkerRegistry,
    share_of,
    this_host,
)
from sagalog.infrastructure.persistence.lease import (
    DEFAULT_LEASE_SECONDS,
    LeaseLost,
    LeaseTerm,
    StoreLease,
    holder_id,
)
from sagalog.process import SagaManager
from sagalog.process.loading import ImportSpecError, import_object
from sagalog.process.store.loops import run_until_stopped
from sagalog.projections import SagaProjector

if TYPE_CHECKING:
    from sagalog.infrastructure.observability.metrics import MetricsServer, SagaMetrics


class StoppableLoop(Protocol):
    """A loop that runs until its stop event is set, e.g. the RabbitMQ reply consumer."""

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set."""
        ...


__all__ = [
    "ParticipantsSetup",
    "StoppableLoop",
    "Worker",
    "WorkerError",
    "WorkerStats",
    "load_participants",
    "stop_on_signals",
]

logger = logging.getLogger("sagalog.worker")

#: Seconds between two warnings while the store or the broker stays unreachable.
DEFAULT_OUTAGE_LOG_INTERVAL = 30.0
OUTAGE_LOG_INTERVAL_ENV_VAR = "SAGALOG_OUTAGE_LOG_INTERVAL"


#: Registers participants on an in-process transport: ``setup(transport, manager)``.
ParticipantsSetup = Callable[[InProcessTransport, SagaManager], None]


class WorkerError(SagalogError, RuntimeError):
    """A loop of the worker failed for good; the worker stopped."""


@dataclass
class WorkerStats:
    """What a worker did while it ran."""

    #: Sagas moved by the timers (timeouts and retries fired).
    sagas_ticked: int = 0
    #: Commands the relay handed to the transport.
    commands_sent: int = 0


class Worker:
    """Runs the timers, the relay (when ``transport`` is given) and the projections.

    ``transport`` defaults to none: no relay. ``projector`` defaults to one on
    the manager's database. :meth:`close` closes the transport and the
    projector; the manager stays the caller's to close.
    """

    def __init__(
        self,
        manager: SagaManager,
        *,
        transport: Transport | None = None,
        projector: SagaProjector | None = None,
        tick_interval: float = 0.5,
        poll_interval: float = 0.2,
        relay_batch_size: int = 500,
        metrics_port: int | None = None,
        metrics_addr: str = "127.0.0.1",
        replies: StoppableLoop | None = None,
        health_interval: float = 2.0,
        outage_log_interval: float | None = None,
        lease_seconds: float | None = DEFAULT_LEASE_SECONDS,
    ) -> None:
        if tick_interval <= 0 or poll_interval <= 0:
            raise ValueError("intervals must be positive")
        self.manager = manager
        self.transport = transport
        self.projector = projector if projector is not None else SagaProjector(manager)
        self.relay = (
            CommandRelay(
                manager,
                transport,
                batch_size=relay_batch_size,
                quarantine=self.projector.views.quarantine_log(),
            )
            if transport is not None
            else None
        )
        self.tick_interval = tick_interval
        self.poll_interval = poll_interval
        self.stats = WorkerStats()
        self.stop_event = threading.Event()
        #: The store's lease (``None``: a private store, or ``lease_seconds=None``: always active).
        self.lease: StoreLease | None = None
        url = manager.database_url
        shared = url.kind in ("postgresql", "sqlite") and not url.is_sqlite_memory
        if lease_seconds is not None and shared:
            self.lease = StoreLease(url, lease_seconds=lease_seconds)
        #: The heartbeat rows of the store's workers (``None`` without a lease).
        self.registry: WorkerRegistry | None = (
            WorkerRegistry(self.lease) if self.lease is not None else None
        )
        #: This worker's name in the lease row.
        self.holder = holder_id()
        #: The reply partitions this worker is given (its share among the live workers).
        self.partitions: tuple[int, ...] = ()
        self._epoch = 0
        self._beat_now = threading.Event()
        #: The lease term held now (``None``: standby, or no lease).
        self.term: LeaseTerm | None = None
        #: Set while this worker runs the relay, the timers and the projections.
        self.active = threading.Event()
        self._term_stop = self.stop_event
        self._active_threads: list[threading.Thread] = []
        self._threads: list[threading.Thread] = []
        self._errors: list[tuple[str, BaseException]] = []
        self._lock = threading.Lock()
        self.replies = replies
        topology = getattr(replies, "topology", None)
        #: How many reply partitions the replies are routed to (0: one queue).
        self.reply_partitions: int = getattr(topology, "reply_partitions", 0) or 0
        if self.registry is not None and self.reply_partitions and hasattr(replies, "assignment"):
            # Each worker consumes its share; without a registry (a private store), all.
            setattr(replies, "assignment", lambda: self.partitions)  # noqa: B010
        if outage_log_interval is None:
            outage_log_interval = float(
                os.environ.get(OUTAGE_LOG_INTERVAL_ENV_VAR, DEFAULT_OUTAGE_LOG_INTERVAL)
            )
        #: Whether the store and the broker answer (logged, and served on /health).
        self.health = DependencyHealth(log_interval=outage_log_interval)
        self.health_interval = health_interval
        self.health.watch("store")
        self._broker_url: str | None = getattr(replies, "url", None) or getattr(
            transport, "url", None
        )
        if self._broker_url is not None:
            self.health.watch("broker")
        self.metrics_port = metrics_port
        self.metrics_addr = metrics_addr
        self.metrics_server: MetricsServer | None = None
        self._follower: SagaEventFollower | None = None
        self._metrics: SagaMetrics | None = None
        if metrics_port is not None:
            self._metrics, self._follower = self._observe_with_metrics()
            # Served from construction on, so the caller can announce the real port.
            self.metrics_server = self._metrics.serve(
                metrics_port, metrics_addr, health=self.health.report
            )

    def _observe_with_metrics(self) -> tuple[SagaMetrics, SagaEventFollower]:
        try:
            from sagalog.infrastructure.observability.metrics import SagaMetrics
        except ImportError as exc:  # prometheus-client is the optional "metrics" extra
            raise ValueError(
                f"metrics need prometheus-client: pip install 'sagalog[metrics]' ({exc})"
            ) from None
        from sagalog.projections import StuckReason

        metrics = SagaMetrics()
        follower = SagaEventFollower(
            self.manager, [metrics.observe], quarantine=self.projector.views.quarantine_log()
        )
        if self.relay is not None:
            metrics.watch_relay(self.relay)
        metrics.watch_lag("projection", self.projector)
        metrics.watch_lag("observer", follower)
        metrics.watch_stuck(self.projector.views.stuck, StuckReason)
        metrics.watch_quarantine(self.projector.views.quarantine_counts)
        metrics.watch_steps_in_flight(self.projector.views.steps_in_flight_counts)
        topology, url = getattr(self.replies, "topology", None), getattr(self.replies, "url", None)
        if topology is not None and hasattr(topology, "dead_letter_queues"):
            from sagalog.infrastructure.rabbitmq.dead_letters import dead_letter_depths

            metrics.watch_dead_letters(lambda: dead_letter_depths(topology, url))
        if getattr(topology, "reply_partitions", 0):
            metrics.watch_reply_partitions(lambda: getattr(self.replies, "held_partitions", ()))
        return metrics, follower

    # -- the loops -------------------------------------------------------------------

    def _on_tick(self, moved: int) -> None:
        self.stats.sagas_ticked += moved

    def _timers(self) -> None:
        self.manager.run(self._term_stop, interval=self.tick_interval, on_tick=self._on_tick)

    def _relay(self) -> None:
        assert self.relay is not None
        relay = self.relay
        try:
            sent, held = relay.retry_quarantined()
            if sent or held:
                logger.warning("relay: %d quarantined commands sent, %d still held", sent, held)
        except (TransportError, PersistenceError) as exc:
            logger.warning("relay: cannot retry the quarantined commands yet: %s", exc)
        except LeaseLost as exc:
            logger.warning("relay: %s; stopped sending", exc)
            self._term_stop.set()
            return
        try:
            relay.run(self._term_stop, poll_interval=self.poll_interval, on_pump=self._on_pump)
        except LeaseLost as exc:
            # Stop sending at once; the lease loop steps down to standby.
            logger.warning("relay: %s; stopped sending", exc)
            self._term_stop.set()

    def _on_pump(self, sent: int) -> None:
        if isinstance(self.transport, InProcessTransport):
            self.transport.deliver()
        self.stats.commands_sent += sent

    def _projections(self) -> None:
        self.projector.run(self._term_stop, poll_interval=self.poll_interval)

    # -- the lease -------------------------------------------------------------------

    def _start_active(self, term: LeaseTerm | None) -> None:
        """Become active: run the relay, the timers and the projections under ``term``."""
        self._term_stop = self.stop_event if term is None else threading.Event()
        if self.stop_event.is_set():
            self._term_stop.set()
        self.term = term
        if self.relay is not None:
            self.relay.send_under(term)
        loops: dict[str, Callable[[], None]] = {
            "timers": self._timers,
            "relay": self._relay,
            "projections": self._projections,
        }
        self._active_threads = []
        for name in self.loops:
            if name in loops:
                thread = threading.Thread(
                    target=self._guarded(name, loops[name]), name=f"sagalog-{name}", daemon=True
                )
                self._active_threads.append(thread)
                thread.start()
        self.active.set()

    def _stop_active(self) -> None:
        """Become standby: stop the active loops and wait until each finished its unit."""
        self._term_stop.set()
        if self.relay is not None:
            self.relay.wake()
        for thread in self._active_threads:
            thread.join()
        self._active_threads = []
        self.active.clear()

    def _hold_lease(self) -> None:
        """The lease loop: stand by until the lease is free, hold it, step down when it is lost."""
        lease = self.lease
        assert lease is not None
        heartbeat = lease.lease_seconds / 4
        poll = lease.lease_seconds / 8
        while not self.stop_event.is_set():
            try:
                term = lease.acquire(self.holder)
            except Exception as exc:
                self.health.down("store", first_line(exc, named=True))
                self.stop_event.wait(poll)
                continue
            if term is None:
                self.stop_event.wait(poll)
                continue
            self._role_changed(True, term.epoch)
            self._start_active(term)
            lost = self._renew_until_lost(term, heartbeat)
            self._stop_active()
            # Hand the lease over now rather than when it expires (a no-op if another
            # worker already took it: the release is fenced by the epoch).
            try:
                lease.release(term)
            except Exception as exc:
                logger.warning("lease: not released (it expires by itself): %s", exc)
            self._role_changed(False, term.epoch)
            if lost:
                # A worker that just lost its term was paused, starved or cut off from the
                # store: the standbys get one lease time to take over before it competes.
                self.stop_event.wait(lease.lease_seconds)

    def _renew_until_lost(self, term: LeaseTerm, heartbeat: float) -> bool:
        """Renew ``term`` every ``heartbeat`` seconds; ``True`` once lost, ``False`` on stop."""
        lease = self.lease
        assert lease is not None
        while not self._term_stop.wait(heartbeat):
            if term.lapsed:  # paused or starved past the lease time: over, even if still ours
                logger.warning("lease: epoch %d lapsed before it was renewed", term.epoch)
                break
            try:
                if not lease.renew(term):
                    logger.warning("lease: epoch %d was taken over by another worker", term.epoch)
                    break
            except Exception as exc:
                self.health.down("store", first_line(exc, named=True))
                if term.lapsed:
                    logger.warning("lease: epoch %d not renewed in time: %s", term.epoch, exc)
                    break
        else:
            if not self.stop_event.is_set():  # a loop gave the term up (the relay lost it)
                term.ended.set()
                return True
            return False
        term.ended.set()
        return True

    # -- the heartbeats ----------------------------------------------------------------

    def _heartbeats(self) -> None:
        """Write this worker's row every quarter lease time (and at once on a role change);
        take this worker's share of the reply partitions from the live rows; leave on stop."""
        registry = self.registry
        assert registry is not None
        assert self.lease is not None
        interval = self.lease.lease_seconds / 4
        beats = 0
        while not self.stop_event.is_set():
            try:
                self._beat(registry)
                beats += 1
                if beats % 60 == 1:
                    registry.forget_gone()
            except Exception as exc:
                self.health.down("store", first_line(exc, named=True))
            self._beat_now.wait(interval)
            self._beat_now.clear()
        try:
            registry.leave(self.holder)
        except Exception as exc:
            logger.warning("workers: row not deleted (it goes stale by itself): %s", exc)

    def _beat(self, registry: WorkerRegistry) -> None:
        active = self.active.is_set()
        lag: int | None = None
        if active and self.relay is not None:
            try:
                lag = self.relay.lag(limit=1000)
            except Exception:
                lag = None
        held = getattr(self.replies, "held_partitions", None)
        host, pid = this_host()
        registry.beat(
            WorkerBeat(
                holder=self.holder,
                host=host,
                pid=pid,
                role="active" if active else "standby",
                epoch=self._epoch,
                partitions=tuple(held) if held is not None else (),
                lag=lag,
            )
        )
        if not self.reply_partitions:
            return
        live = [worker.holder for worker in registry.live()]
        share = share_of(self.holder, live, self.reply_partitions)
        if share != self.partitions:
            logger.warning(
                "worker %s consumes reply partitions %s of %d (%d live workers)",
                self.holder,
                ",".join(str(k) for k in share) or "none",
                self.reply_partitions,
                len(set(live) | {self.holder}),
                extra={"partitions": list(share)},
            )
            self.partitions = share

    def _role_changed(self, active: bool, epoch: int) -> None:
        self._epoch = epoch
        self._beat_now.set()
        role = "active" if active else "standby"
        logger.warning(
            "worker %s is %s (lease epoch %d)",
            self.holder,
            role,
            epoch,
            extra={"role": role, "epoch": epoch},
        )
        if self._metrics is not None:
            self._metrics.role_changed(active, epoch)

    def _replies(self) -> None:
        assert self.replies is not None
        self.replies.run(self.stop_event)

    def _observe(self) -> None:
        assert self._follower is not None
        self._follower.run(self.stop_event, poll_interval=self.poll_interval)

    def _watch_health(self) -> None:
        """Probe the store and the broker every ``health_interval`` until stopped.

        Never fails the worker: a probe that raises marks its dependency down.
        """
        run_until_stopped(self._probe, self.stop_event, interval=self.health_interval)

    def _probe(self) -> int:
        try:
            probe_store(self.manager.database_url)
        except Exception as exc:
            self.health.down("store", first_line(exc, named=True))
        else:
            self.health.up("store")
        if self._broker_url is not None:
            self._probe_broker(self._broker_url)
        return 0  # nothing is ever "moved": wait the interval every time

    def _probe_broker(self, url: str) -> None:
        ready = getattr(self.replies, "ready", None)
        if isinstance(ready, threading.Event) and ready.is_set():
            self.health.up("broker")  # the reply consumer is connected and consuming
            return
        try:
            from sagalog.infrastructure.rabbitmq.topology import close_quietly, connect

            close_quietly(connect(url, name="sagalog-health"))
        except Exception as exc:
            self.health.down("broker", first_line(exc, named=True))
        else:
            self.health.up("broker")

    def _guarded(self, name: str, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except BaseException as exc:
                # a SagalogError (a missing store key, say) is the user's to fix: one line
                known = isinstance(exc, SagalogError)
                logger.error("%s loop failed: %s", name, exc, exc_info=not known)
                with self._lock:
                    self._errors.append((name, exc))
                self.stop()

        return run

    # -- control ---------------------------------------------------------------------

    @property
    def loops(self) -> list[str]:
        """Names of the loops this worker runs."""
        names = ["timers", "projections"]
        if self.relay is not None:
            names.insert(1, "relay")
        if self.replies is not None:
            names.append("replies")
        if self._follower is not None:
            names.append("metrics")
        return names

    def start(self) -> None:
        """Start the loops in background threads."""
        if self._threads:
            raise RuntimeError("the worker was started already")
        loops: dict[str, Callable[[], None]] = {
            "metrics": self._observe,
            "replies": self._replies,
        }
        if self.lease is None:
            self._start_active(None)
        else:
            loops["lease"] = self._hold_lease
            loops["heartbeats"] = self._heartbeats
        for name in [*self.loops, "lease", "heartbeats"]:
            if name not in loops:
                continue
            thread = threading.Thread(
                target=self._guarded(name, loops[name]), name=f"sagalog-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        watcher = threading.Thread(target=self._watch_health, name="sagalog-health", daemon=True)
        self._threads.append(watcher)
        watcher.start()

    def stop(self) -> None:
        """Ask every loop to finish what it is doing and return (and hand the lease over)."""
        self.stop_event.set()
        self._term_stop.set()
        self._beat_now.set()
        if self.relay is not None:
            self.relay.wake()  # the relay waits for new commands, not for the stop event

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the loops to return; ``True`` if they all did within ``timeout``."""
        for thread in self._threads:
            thread.join(timeout)
        for thread in list(self._active_threads):
            thread.join(timeout)
        threads = [*self._threads, *self._active_threads]
        return not any(thread.is_alive() for thread in threads)

    def run(self, *, check_interval: float = 0.2) -> None:
        """Start, block until stopped (or a loop fails), then join.

        Raises :class:`WorkerError` if a loop failed.
        """
        self.start()
        while not self.stop_event.wait(check_interval):
            pass
        self.join()
        if self._errors:
            name, exc = self._errors[0]
            raise WorkerError(f"the {name} loop failed: {exc}") from exc

    def close(self) -> None:
        """Close the transport and the projector's connections (not the manager)."""
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        if self.transport is not None:
            self.transport.close()
        if self.lease is not None:
            self.lease.close()
        self.projector.close()


@contextmanager
def stop_on_signals(
    stop: Callable[[], None], signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[list[int]]:
    """Call ``stop()`` when one of ``signals`` arrives; restore the old handlers after.

    Yields the list of signals received so far. Must be used in the main thread
    (Python delivers signals there); the handler only calls ``stop``.
    """
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop()

    previous: dict[int, Any] = {}
    for signum in signals:
        previous[signum] = signal.signal(signum, handler)
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def load_participants(spec: str) -> ParticipantsSetup:
    """Import ``module:function``, the function that registers in-process participants.

    Raises ``ValueError`` (an :class:`~sagalog.process.loading.ImportSpecError`) with a
    one-line message when it cannot be found.
    """
    setup = import_object(spec, what="participants function")
    if not callable(setup):
        raise ImportSpecError(f"{spec} is a {type(setup).__name__}, not a function")
    return setup  # type: ignore[no-any-return]
