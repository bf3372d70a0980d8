"""Saga definitions and scripted sagas shared by the tests of several folders.

``ORDER`` is the process tests' four-step order; ``SHOP``, ``SLOW`` and ``HOLD`` with
:func:`run_scenarios` drive a manager through sagas that, together, record every kind
of saga event: completion, retries, timeouts of actions and of compensations,
compensation, dead letters of both kinds, every operator action, and sagas left
running. Clocks are ``ManualClock(T0)`` (:mod:`sagalog.process.clock`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from sagalog.domain import CommandKind, RetryPolicy, SagaDefinition, Step
from sagalog.domain.definition import parallel
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock

#: Where the tests' clocks start.
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


ORDER = SagaDefinition(
    "Order",
    [
        Step(
            name="reserve",
            action="Inventory.Reserve",
            compensation="Inventory.Release",
            timeout=timedelta(seconds=30),
        ),
        Step(
            name="charge",
            action="Payment.Charge",
            compensation="Payment.Refund",
            timeout=timedelta(seconds=30),
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=10)),
        ),
        Step(
            name="ship",
            action="Shipping.Create",
            compensation="Shipping.Cancel",
            compensation_retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=5)),
        ),
        Step(
            name="notify",
            action="Mail.Send",
            retriable=True,
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=1)),
        ),
    ],
)


def finish_compensations(manager: SagaManager, saga_id: UUID) -> list[str]:
    """Answer every compensation ``saga_id`` dispatches with success; the steps, in order."""
    undone: list[str] = []
    while (command := manager.get(saga_id).pending_command) is not None:
        assert command.kind is CommandKind.COMPENSATION, command
        manager.handle_compensation_completed(saga_id, command.step)
        undone.append(command.step)
    return undone


SHOP = SagaDefinition(
    "Shop",
    [
        Step(
            name="reserve",
            action="Inventory.Reserve",
            compensation="Inventory.Release",
            timeout=timedelta(seconds=30),
            compensation_retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=5)),
        ),
        Step(
            name="charge",
            action="Payment.Charge",
            compensation="Payment.Refund",
            timeout=timedelta(seconds=30),
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=10)),
        ),
        Step(name="ship", action="Shipping.Create", compensation="Shipping.Cancel"),
        Step(
            name="notify",
            action="Mail.Send",
            retriable=True,
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=1)),
        ),
    ],
)

#: Steps without timeouts: a saga waits on them for ever, which the stuck query notices.
SLOW = SagaDefinition(
    "Slow",
    [
        Step(name="prepare", action="Slow.Prepare", compensation="Slow.Unprepare"),
        Step(name="finish", action="Slow.Finish", compensation="Slow.Unfinish"),
    ],
)

#: A hold whose participant refuses it once expired: not compensated when uncertain.
HOLD = SagaDefinition(
    "Hold",
    [
        Step(
            name="hold",
            action="Desk.Hold",
            compensation="Desk.Release",
            timeout=timedelta(seconds=30),
            compensate_uncertain=False,
        ),
    ],
)

#: Two steps and a retriable tail, with a deadline for the whole saga.
TIMED = SagaDefinition(
    "Timed",
    [
        Step(name="book", action="Desk.Book", compensation="Desk.Cancel"),
        Step(name="pay", action="Bank.Pay", compensation="Bank.Refund"),
        Step(
            name="tell",
            action="Mail.Tell",
            retriable=True,
            retry=RetryPolicy(max_attempts=3, initial_delay=timedelta(seconds=5)),
        ),
    ],
    deadline=timedelta(minutes=5),
)

DEFINITIONS = (SHOP, SLOW, HOLD, TIMED)

Hook = Callable[[], object]


def run_scenarios(
    manager: SagaManager, clock: ManualClock, after: Hook | None = None
) -> dict[str, UUID]:
    """Drive one saga per scenario; call ``after()`` after every recorded step.

    Returns the saga ids by scenario name.
    """

    def step() -> None:
        if after is not None:
            after()

    ids: dict[str, UUID] = {}

    # Every step succeeds.
    ids["completed"] = s = manager.start("Shop", {"order": 1})
    step()
    for name in ("reserve", "charge", "ship", "notify"):
        manager.handle_step_completed(s, name, {"ok": name})
        step()

    # A step fails, is retried, fails again: compensation runs, the saga fails.
    ids["compensated"] = s = manager.start("Shop", {"order": 2})
    manager.handle_step_completed(s, "reserve", {"ref": "r-2"})
    step()
    manager.handle_step_failed(s, "charge", "card declined")
    step()
    manager.tick(clock.advance(11))
    step()
    manager.handle_step_failed(s, "charge", "card declined again")
    step()
    manager.handle_compensation_completed(s, "reserve")
    step()

    # The first step never answers: it times out; it may have been done, so it is
    # released; its success comes after all (a late fact, already compensated).
    ids["timed_out"] = s = manager.start("Shop", {"order": 3})
    step()
    manager.tick(clock.advance(31))
    step()
    manager.handle_compensation_completed(s, "reserve")
    step()
    manager.handle_step_completed(s, "reserve", {"ref": "r-3"})
    step()

    # The compensation fails, is retried, times out: dead-lettered; an operator retries it.
    ids["compensation_dead_letter_retried"] = s = manager.start("Shop", {"order": 4})
    manager.handle_step_completed(s, "reserve")
    manager.handle_step_failed(s, "charge", "declined")
    step()
    manager.tick(clock.advance(11))
    manager.handle_step_failed(s, "charge", "declined")
    step()
    manager.handle_compensation_failed(s, "reserve", "warehouse offline")
    step()
    manager.tick(clock.advance(6))
    step()
    manager.tick(clock.advance(31))  # the second compensation attempt times out
    step()
    manager.retry(s, actor="alice", reason="warehouse back", patch={"order": 40, "site": "B"})
    step()
    manager.handle_compensation_completed(s, "reserve")
    step()

    # A dead-lettered compensation that an operator resolves by hand.
    ids["compensation_dead_letter_resolved"] = s = manager.start("Shop", {"order": 5})
    manager.handle_step_completed(s, "reserve")
    manager.handle_step_failed(s, "charge", "declined")
    manager.tick(clock.advance(11))
    manager.handle_step_failed(s, "charge", "declined")
    manager.handle_compensation_failed(s, "reserve", "offline")
    manager.tick(clock.advance(6))
    manager.handle_compensation_failed(s, "reserve", "offline")
    step()
    manager.resolve(s, actor="bob", reason="released by hand")
    step()

    # The retriable step after the pivot gives up: dead-lettered; an operator resolves it.
    ids["action_dead_letter_resolved"] = s = manager.start("Shop", {"order": 6})
    for name in ("reserve", "charge", "ship"):
        manager.handle_step_completed(s, name)
    manager.handle_step_failed(s, "notify", "smtp down")
    manager.tick(clock.advance(2))
    manager.handle_step_failed(s, "notify", "smtp down")
    step()
    manager.resolve(s, actor="carol", reason="mailed by hand")
    step()

    # An operator aborts a running saga after its first step.
    ids["aborted"] = s = manager.start("Shop", {"order": 7})
    manager.handle_step_completed(s, "reserve")
    step()
    manager.abort(s, actor="dave", reason="customer cancelled")
    step()
    manager.handle_compensation_completed(s, "charge")  # in flight at the abort
    step()
    manager.handle_compensation_completed(s, "reserve")
    step()

    # A step that opts out of compensation when uncertain times out; its success comes
    # after the saga failed (an effect in force); an operator compensates it.
    ids["late_effect_repaired"] = s = manager.start("Hold", {"n": 10})
    manager.tick(clock.advance(31))
    step()
    manager.handle_step_completed(s, "hold", {"desk": 4})
    step()
    manager.compensate(s, actor="erin", reason="the hold went through late")
    step()
    manager.handle_compensation_completed(s, "hold")
    step()

    # The saga's deadline passes while its second step is in flight: it compensates both.
    ids["deadline_passed"] = s = manager.start("Timed", {"n": 11})
    manager.handle_step_completed(s, "book")
    step()
    manager.tick(clock.advance(301))
    step()
    manager.handle_compensation_completed(s, "pay")
    step()
    manager.handle_compensation_completed(s, "book")
    step()

    # The deadline passes past the pivot: recorded, and the saga goes on to complete.
    ids["deadline_past_pivot"] = s = manager.start("Timed", {"n": 12})
    manager.handle_step_completed(s, "book")
    manager.handle_step_completed(s, "pay")
    manager.handle_step_failed(s, "tell", "smtp down")
    step()
    manager.tick(clock.advance(301))
    step()
    manager.handle_step_completed(s, "tell")
    step()

    # Left dead-lettered (stuck: DEAD_LETTERED).
    ids["dead_lettered"] = s = manager.start("Shop", {"order": 8})
    for name in ("reserve", "charge", "ship"):
        manager.handle_step_completed(s, name)
    manager.handle_step_failed(s, "notify", "smtp down")
    manager.tick(clock.advance(2))
    manager.handle_step_failed(s, "notify", "smtp down")
    step()

    # Left running: waiting for a step without timeout, and compensating.
    ids["running"] = s = manager.start("Slow", {"n": 1})
    step()
    ids["compensating"] = s = manager.start("Slow", {"n": 2})
    manager.handle_step_completed(s, "prepare")
    manager.handle_step_failed(s, "finish", "nope")
    step()

    # Left waiting for a step whose deadline will pass.
    ids["waiting"] = manager.start("Shop", {"order": 9})
    step()
    return ids


#: budget, then hotel, flight and car side by side (each with its own timeout), then a
#: retriable confirm: a parallel saga with several timers at once.
TRIP = SagaDefinition(
    "Trip",
    [
        Step(
            name="budget",
            action="Budget.Reserve",
            compensation="Budget.Release",
            timeout=timedelta(seconds=60),
        ),
        parallel(
            Step(
                name="hotel",
                action="Hotel.Book",
                compensation="Hotel.Cancel",
                timeout=timedelta(seconds=30),
                retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=10)),
            ),
            Step(
                name="flight",
                action="Flight.Book",
                compensation="Flight.Cancel",
                timeout=timedelta(seconds=120),
            ),
            Step(
                name="car",
                action="Car.Rent",
                compensation="Car.Return",
                timeout=timedelta(seconds=90),
                compensation_retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=5)),
            ),
        ),
        Step(name="confirm", action="Trip.Confirm", retriable=True),
    ],
)


def run_parallel_scenarios(
    manager: SagaManager, clock: ManualClock, after: Hook | None = None
) -> dict[str, UUID]:
    """Drive ``Trip`` sagas (``TRIP`` registered) through the parallel cases; ids by name."""

    def step() -> None:
        if after is not None:
            after()

    ids: dict[str, UUID] = {}

    # Every branch succeeds, in another order than the list's.
    ids["trip_completed"] = s = manager.start("Trip", {"trip": 1})
    manager.handle_step_completed(s, "budget", {"b": 1})
    step()
    for name in ("car", "hotel", "flight", "confirm"):
        manager.handle_step_completed(s, name, {"ok": name})
        step()

    # One branch fails and waits for a retry while the others are in flight; its retry
    # times out: the rollback waits for the abandoned branches (one succeeds late, one
    # times out), compensates, a compensation fails, is retried and dead-lettered; an
    # operator resolves it.
    ids["trip_rolled_back"] = s = manager.start("Trip", {"trip": 2})
    manager.handle_step_completed(s, "budget")
    step()
    manager.handle_step_failed(s, "hotel", "no rooms")
    step()
    manager.tick(clock.advance(11))
    step()
    manager.handle_step_completed(s, "flight", {"seat": "2A"})
    step()
    manager.tick(clock.advance(31))  # hotel's second attempt times out: roll back
    step()
    manager.handle_step_completed(s, "car", {"car": "late"})
    step()
    manager.handle_compensation_failed(s, "car", "depot closed")
    step()
    manager.tick(clock.advance(6))
    step()
    manager.handle_compensation_failed(s, "car", "depot closed")
    step()
    manager.resolve(s, actor="frank", reason="returned by hand")
    step()
    while (saga := manager.get(s)).steps_in_flight:
        manager.handle_compensation_completed(s, saga.steps_in_flight[0])
        step()

    # Left with its three branches in flight, each with its own deadline.
    ids["trip_in_flight"] = s = manager.start("Trip", {"trip": 3})
    manager.handle_step_completed(s, "budget")
    step()
    manager.handle_step_completed(s, "flight")
    step()
    return ids
