"""The command relay: the saga log is the outbox.

The relay follows the manager's notification log from a tracked position and
hands every ``StepDispatched`` / ``CompensationDispatched`` to a transport. A
command is therefore never sent unless its event is committed. The position is
recorded (in the same database, in eventsourcing's tracking table of the relay)
only after the transport accepted the commands, once per batch: after a crash
the relay resumes from its position and may send the last batch again — delivery
is at least once, and each command keeps its deterministic ``command_id`` so
participants drop the duplicate. A transport error leaves the position at the
last command that was accepted and the relay retries with exponential backoff.

The relay also follows its manager as eventsourcing's followers do
(``manager.lead(relay)``): after each commit the manager hands it what it just
recorded, and the next pump sends those commands without reading them back from
the log, as long as they continue the relay's position without a gap. Anything
else — a gap (another process wrote in between, a rolled-back insert used up an
id), a relay that fell behind, a restart — is read from the log as before, so
the pushed recordings only ever save a read; the position is recorded the same
way either way.

Two relays on one database would both send, so each worker's relay runs only while its
worker holds the store's lease (:mod:`sagalog.infrastructure.persistence.lease`): under a
lease term (:meth:`CommandRelay.send_under`) each command is sent only while the term
holds by the worker's own clock, and the position is recorded only if the lease row still
has the term's epoch, so a worker paused past its lease and resumed cannot send again
or move the position once another took over.

A poison event — one that no longer decodes, or whose command cannot be built or
that the transport refuses as such (not a broker outage, which is retried) — does
not stop the relay: it is quarantined (recorded in ``sagalog_quarantine`` with the
error, see :mod:`sagalog.projections.quarantine`) and the relay carries on; the
saga whose command was not sent times out as it would had the participant never
answered. :meth:`CommandRelay.retry_quarantined` sends what is held again (the
worker does so when it starts).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import (
    InfrastructureFactory,
    Notification,
    PersistenceError,
    Recording,
    Tracking,
)
from eventsourcing.system import RecordingEvent, RecordingEventReceiver
from eventsourcing.utils import Environment, get_topic

from sagalog.domain import Command, Saga
from sagalog.infrastructure.messaging.transport import Transport, TransportError
from sagalog.infrastructure.observability.tracing import send_traced
from sagalog.infrastructure.persistence.lease import LeaseTerm
from sagalog.process import SagaManager
from sagalog.process.debugging.explain import Outbox
from sagalog.process.store.loops import Backoff, run_until_stopped
from sagalog.projections.cursor import LogCursor
from sagalog.projections.quarantine import QuarantineLog, describe_failure

logger = logging.getLogger("sagalog.relay")

#: Topics of the events that carry a command.
COMMAND_TOPICS: tuple[str, ...] = tuple(get_topic(cls) for cls in Saga.COMMAND_EVENTS)

#: At most this many pushed recordings wait for a pump; beyond, the relay reads the log.
MAX_PUSHED = 50_000


class CommandRelay(LogCursor, RecordingEventReceiver[UUID]):
    """Delivers the commands recorded by ``manager`` to ``transport``, at least once."""

    name = "CommandRelay"

    def __init__(
        self,
        manager: SagaManager,
        transport: Transport,
        *,
        batch_size: int = 500,
        initial_backoff: float = 0.05,
        max_backoff: float = 5.0,
        quarantine: QuarantineLog | None = None,
    ) -> None:
        super().__init__(manager, batch_size=batch_size)
        self.manager = manager
        #: Where poison events are recorded (default: the table on the manager's database).
        self._quarantine = quarantine
        #: Events this relay set aside since it was created.
        self.quarantined = 0
        self.transport = transport
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        env = manager.database_url.application_env(self.name)
        factory: InfrastructureFactory[Any] = InfrastructureFactory.construct(
            Environment(self.name, env)
        )
        self._factory = factory
        self.tracking = factory.tracking_recorder()
        self.delivered = 0
        #: Commands sent again after a takeover: at or below the mark up to which the
        #: previous lease holder had begun to send (at most its last batch per failover).
        self.resent = 0
        #: Times recording the position failed (the store failed, or the lease was lost).
        self.tracking_failures = 0
        #: The position this relay recorded last (``None``: read it from the store).
        #: One relay runs per saga database at a time (the lease's holder), so after the
        #: first read only this relay moves its position; any failure of a pump, and a
        #: new lease term, forget it, to be read again.
        self._position: int | None = None
        #: The lease term this relay sends under (``None``: no lease, the only relay).
        #: Each command is sent only while the term holds, and the position is
        #: recorded only if the lease row still has the term's epoch.
        self.fence: LeaseTerm | None = None
        #: Recordings the manager pushed after its commits, oldest first.
        self._pushed: deque[Recording[UUID]] = deque()
        self._pushed_lock = threading.Lock()
        self._wakeup = threading.Event()
        manager.lead(self)

    def receive_recording_event(self, new_recording_event: RecordingEvent[UUID]) -> None:
        """Take what the manager just committed (called on the manager's thread).

        The recordings wait for the next pump; if too many wait, they are dropped
        and the relay reads the log instead (nothing is lost either way).
        """
        with self._pushed_lock:
            if len(self._pushed) + len(new_recording_event.recordings) > MAX_PUSHED:
                self._pushed.clear()
            else:
                self._pushed.extend(new_recording_event.recordings)
        self.wake()

    def send_under(self, term: LeaseTerm | None) -> None:
        """Send (and record the position) only while ``term`` holds; ``None``: no lease.

        The position is read again from the store: another holder may have moved it.
        """
        self.fence = term
        self._position = None

    def wake(self) -> None:
        """End the wait of :meth:`run` for new commands now (something was committed,
        or the relay is being stopped)."""
        self._wakeup.set()

    def close(self) -> None:
        """Close the relay's own connections (its tracking store); the manager stays open.

        The relay reads the manager's log through the manager's recorder but keeps
        its position through a store of its own, with its own connection pool,
        which would otherwise stay open until garbage collection. The manager
        stops pushing its recordings to it.
        """
        if self in self.manager.followers:
            self.manager.followers.remove(self)
        with self._pushed_lock:
            self._pushed.clear()
        self._factory.close()
        if self._quarantine is not None:
            self._quarantine.close()

    @property
    def position(self) -> int:
        """Notification id up to which the log is relayed (0 before the first command).

        Every command at or before it was handed over. It may be past the last
        command (a saga's later events, which carry none, are passed over too).
        """
        return self.tracking.max_tracking_id(self.manager.name) or 0

    def tracked_position(self) -> int:
        return self.position if self._position is None else self._position

    def lag(self, limit: int = 10_000) -> int:
        """How many recorded commands wait to be sent (counted up to ``limit``).

        Only command events count: a saga's later events (``SagaCompleted``, …)
        carry nothing to send, so an idle system has a lag of zero.
        """
        waiting = self.manager.recorder.select_notifications(
            start=self.position + 1, limit=limit, topics=COMMAND_TOPICS
        )
        return len(waiting)

    def pump(self) -> int:
        """Send one batch of commands recorded since the position; return how many.

        Raises :class:`TransportError` after recording the position of the
        commands that were accepted before the failure. The position is read from
        the store on the first pump and after any failed one; otherwise the relay
        starts where its last pump recorded it (saving a read per batch).
        """
        position = self._position
        if position is None:
            position = self.position
        self._position = None  # until this pump has recorded its position
        last_sent: int | None = None  # the last command the transport accepted
        last_seen: int | None = None  # the last notification of the batch
        count = 0
        done = False
        fence = self.fence
        try:
            batch = list(self._commands_after(position))
            commands = [nid for nid, command in batch if command is not None]
            if fence is not None and commands:
                # On the database, before sending: the epoch still ours, and the mark
                # the next holder counts its re-sent commands by.
                fence.mark_sending(commands[-1])
            together = self._send_together(batch, fence)
            if together is not None:
                count, last_sent, accepted_all = together
                if not accepted_all:
                    last_seen = last_sent
                    raise TransportError(
                        f"the broker took {count} of {len(commands)} commands; "
                        "the rest are sent again"
                    )
                last_seen = batch[-1][0] if batch else None
                done = True
                batch = []
            for notification_id, command in batch:
                if command is not None:
                    if fence is not None:
                        fence.check()
                    try:
                        send_traced(command, self.transport.send)
                    except TransportError:
                        raise
                    except Exception as exc:  # this command's fault, not the broker's
                        self._set_aside(notification_id, command.saga_id, command.name, exc)
                    else:
                        count += 1
                        last_sent = notification_id
                        if fence is not None and notification_id <= fence.inherited_sending_to:
                            self.resent += 1
                last_seen = notification_id
            done = True
        finally:
            # Past the events between commands only when the whole batch went out;
            # after a failure, up to the last command accepted.
            sent_up_to = last_seen if done else last_sent
            if sent_up_to is not None:
                tracking = Tracking(self.manager.name, sent_up_to)
                try:
                    if fence is None:
                        self.tracking.insert_tracking(tracking)
                    else:
                        fence.record_position(self.tracking, tracking)
                except Exception:
                    self.tracking_failures += 1
                    raise
                self.delivered += count
        self._position = position if sent_up_to is None else sent_up_to
        return count

    def _send_together(
        self, batch: list[tuple[int, Command | None]], fence: LeaseTerm | None
    ) -> tuple[int, int | None, bool] | None:
        """Send the batch's commands at once, if the transport can (``send_many``).

        Returns (commands accepted, the notification id of the last of them, whether all
        were), or ``None`` when they are to be sent one by one: a transport without
        ``send_many``, a single command, or a command whose message cannot be built
        (sent one by one, it is quarantined alone).
        """
        send_many = getattr(self.transport, "send_many", None)
        sendable = [(nid, command) for nid, command in batch if command is not None]
        if send_many is None or len(sendable) < 2:
            return None
        if fence is not None:
            fence.check()
        try:
            accepted = int(send_many([command for _nid, command in sendable]))
        except TransportError:
            raise
        except Exception as exc:  # a command's fault, before anything was published
            logger.warning("relay: a batch could not be sent at once (%s); one by one", exc)
            return None
        taken = sendable[:accepted]
        if fence is not None:
            self.resent += sum(1 for nid, _c in taken if nid <= fence.inherited_sending_to)
        last = taken[-1][0] if taken else None
        return accepted, last, accepted == len(sendable)

    def _commands_after(self, position: int) -> Iterator[tuple[int, Command | None]]:
        """The next batch after ``position``: each notification id and its command, if any.

        Pushed recordings that continue ``position`` without a gap are used as
        they are (their commands get a copy of the payload, so a participant in
        this process cannot change the saga's own data); otherwise the batch is
        read from the log, only command events, as eventsourcing stores them.
        """
        pushed = self._take_pushed(position)
        if pushed is not None:
            for recording in pushed:
                event = recording.domain_event
                command = None
                if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
                    try:
                        command = event.command(orjson.loads(orjson.dumps(event.payload)))
                    except Exception as exc:
                        note = recording.notification
                        self._set_aside(note.id, note.originator_id, note.topic, exc)
                yield recording.notification.id, command
            return
        notifications: list[Notification] = list(self.read_after(position, topics=COMMAND_TOPICS))
        to_domain_event = self.manager.mapper.to_domain_event
        for notification in notifications:
            command = None
            try:
                event = to_domain_event(notification)
                if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
                    command = event.command()
            except Exception as exc:
                self._set_aside(
                    notification.id, notification.originator_id, notification.topic, exc
                )
            yield notification.id, command

    def _quarantine_log(self) -> QuarantineLog:
        if self._quarantine is None:
            self._quarantine = QuarantineLog(self.manager.database_url)
        return self._quarantine

    def _set_aside(self, notification_id: int, saga_id: Any, what: str, exc: BaseException) -> None:
        """Quarantine one poison event and log it; the relay carries on."""
        error = describe_failure(exc)
        self._quarantine_log().record(
            follower=self.name,
            application_name=self.manager.name,
            notification_id=notification_id,
            saga_id=saga_id if isinstance(saga_id, UUID) else None,
            topic=what,
            error=error,
        )
        self.quarantined += 1
        logger.error(
            "relay: event %d (%s) of saga %s quarantined, its command not sent: %s",
            notification_id,
            what,
            saga_id,
            error,
        )

    def retry_quarantined(self) -> tuple[int, int]:
        """Send the commands of the events this relay set aside; return (sent, still held)."""
        held = self._quarantine_log().events(follower=self.name)
        sent = failed = 0
        for item in held:
            if item.application_name != self.manager.name:
                continue
            try:
                event = self.manager.mapper.to_domain_event(self.read_one(item.notification_id))
                if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
                    if self.fence is not None:
                        self.fence.check()
                    self.transport.send(event.command())
            except TransportError:
                raise
            except Exception as exc:
                failed += 1
                self._quarantine_log().note_retry_failed(
                    self.name, self.manager.name, [item.notification_id], describe_failure(exc)
                )
                continue
            self._quarantine_log().remove(self.name, self.manager.name, [item.notification_id])
            sent += 1
        return sent, failed

    def _take_pushed(self, position: int) -> list[Recording[UUID]] | None:
        """Pushed recordings from ``position + 1`` on, gap-free, up to a batch of commands.

        ``None`` when they cannot be used (none waiting, or the first does not
        follow ``position``): the log is read instead and what waited is dropped.
        """
        with self._pushed_lock:
            pushed = self._pushed
            while pushed and pushed[0].notification.id <= position:
                pushed.popleft()
            if not pushed or pushed[0].notification.id != position + 1:
                pushed.clear()
                return None
            taken: list[Recording[UUID]] = []
            commands = 0
            expected = position + 1
            while pushed and commands < self.batch_size:
                recording = pushed[0]
                if recording.notification.id != expected:
                    break
                pushed.popleft()
                taken.append(recording)
                expected += 1
                if recording.notification.topic in COMMAND_TOPICS:
                    commands += 1
            return taken

    def run(
        self,
        stop: threading.Event,
        *,
        poll_interval: float = 0.1,
        on_pump: Callable[[int], None] | None = None,
    ) -> None:
        """Pump until ``stop`` is set, backing off exponentially on transport errors.

        ``on_pump(sent)`` runs after each pump, inside the retry (the worker delivers
        in-process commands there). When nothing was sent the relay waits up to
        ``poll_interval``, woken early by :meth:`wake`.
        """

        def step() -> int:
            sent = self.pump()
            if on_pump is not None:
                on_pump(sent)
            return sent

        def idle(seconds: float) -> None:
            self._wakeup.wait(seconds)
            self._wakeup.clear()

        def retrying(exc: BaseException, delay: float) -> None:
            logger.warning("relay: %s; retrying in %.2fs", exc, delay)

        run_until_stopped(
            step,
            stop,
            interval=poll_interval,
            backoff=Backoff(self.initial_backoff, self.max_backoff),
            retry_on=(TransportError, PersistenceError),
            on_error=retrying,
            idle=idle,
        )


#: ``outbox_of`` looks this many command events past the relay's position, at most.
_OUTBOX_SCAN_LIMIT = 100_000


def outbox_of(manager: SagaManager, saga: Saga) -> Outbox:
    """Where the relay of ``manager``'s store stands; whether it sent ``saga``'s pending command.

    Reads the relay's tracked position (written by whichever process runs the relay:
    ``sagalog worker --transport ...``), without running a relay.
    """
    env = manager.database_url.application_env(CommandRelay.name)
    factory: InfrastructureFactory[Any] = InfrastructureFactory.construct(
        Environment(CommandRelay.name, env)
    )
    try:
        position = factory.tracking_recorder().max_tracking_id(manager.name) or 0
    finally:
        factory.close()
    recorder = manager.recorder
    head = recorder.max_notification_id() or 0
    waiting = recorder.select_notifications(
        start=position + 1, limit=_OUTBOX_SCAN_LIMIT, topics=COMMAND_TOPICS
    )
    pending = saga.pending_command
    versions = {
        event.originator_version
        for event in manager.history(saga.id)
        if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched)
        and pending is not None
        and event.command_id == pending.command_id
    }
    unsent = any(n.originator_id == saga.id and n.originator_version in versions for n in waiting)
    return Outbox(pending_sent=not unsent, relay_position=position, head=head, waiting=len(waiting))
