"""Prometheus metrics derived from the saga log, scraped over HTTP from a registry we own."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from support.sagas import TRIP

from sagalog.domain import Command, RetryPolicy, Saga, SagaDefinition, SagaStatus, Step
from sagalog.infrastructure.messaging.observer import SagaEventFollower
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.observability.metrics import MetricsServer, SagaMetrics
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.projections import SagaProjector, StuckReason

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)

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
            compensation_retry=RetryPolicy(max_attempts=1),
        ),
        Step(name="ship", action="Shipping.Create", compensation="Shipping.Cancel"),
    ],
)


class Discard:
    """A transport that accepts everything (the relay's lag is what is measured)."""

    def send(self, command: Command) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def manager(database_url: str, clock: ManualClock) -> Iterator[SagaManager]:
    app = SagaManager([ORDER], database_url, clock=clock)
    yield app
    app.close()


@pytest.fixture
def metrics() -> SagaMetrics:
    return SagaMetrics()


@pytest.fixture
def server(metrics: SagaMetrics) -> Iterator[MetricsServer]:
    running = metrics.serve(0)
    yield running
    running.close()


def scrape(server: MetricsServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample on the endpoint, by (name, labels)."""
    with urllib.request.urlopen(server.url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, (
        f"{name}{labels} not scraped; have {sorted(k for k, _ in samples if k.startswith(name))}"
    )
    return samples[key]


def _run_three_sagas(manager: SagaManager, clock: ManualClock) -> tuple[UUID, UUID, UUID]:
    """One completes, one times out, retries and is compensated (its charge too: the attempt
    that timed out may have charged), one is dead-lettered."""
    completes = manager.start("Order", {"n": 1})
    clock.advance(2)
    manager.handle_step_completed(completes, "reserve")
    clock.advance(3)
    manager.handle_step_completed(completes, "charge")
    clock.advance(1)
    manager.handle_step_completed(completes, "ship")

    compensated = manager.start("Order", {"n": 2})
    clock.advance(1)
    manager.handle_step_completed(compensated, "reserve")
    manager.tick(clock.advance(31))  # charge attempt 1 times out; retry scheduled
    due = manager.get(compensated).steps["charge"].retry_due_at
    assert due is not None
    clock.now = due
    manager.tick(due)  # attempt 2 dispatched
    clock.advance(5)
    manager.handle_step_failed(compensated, "charge", "card declined")  # compensation begins
    clock.advance(2)
    manager.handle_compensation_completed(compensated, "charge")  # uncertain: refunded
    clock.advance(4)
    manager.handle_compensation_completed(compensated, "reserve")

    dead = manager.start("Order", {"n": 3})
    manager.handle_step_completed(dead, "reserve")
    manager.handle_step_completed(dead, "charge")
    manager.handle_step_failed(dead, "ship", "no courier")
    clock.advance(7)
    manager.handle_compensation_failed(dead, "charge", "ledger down")  # 1 attempt: dead letter
    return completes, compensated, dead


def test_counters_and_durations_follow_the_log(
    manager: SagaManager, clock: ManualClock, metrics: SagaMetrics, server: MetricsServer
) -> None:
    follower = SagaEventFollower(manager, [metrics.observe])
    completes, compensated, dead = _run_three_sagas(manager, clock)
    assert manager.get(completes).status is SagaStatus.COMPLETED
    assert manager.get(compensated).status is SagaStatus.FAILED
    assert manager.get(dead).status is SagaStatus.DEAD_LETTERED
    before = scrape(server)
    assert ("sagalog_sagas_started_total", frozenset({("saga_type", "Order")})) not in before

    handled = follower.drain()
    samples = scrape(server)
    assert handled == sum(len(manager.history(s)) for s in (completes, compensated, dead))
    assert value(samples, "sagalog_events_observed_total") == handled
    assert value(samples, "sagalog_sagas_started_total", saga_type="Order") == 3
    assert value(samples, "sagalog_sagas_completed_total", saga_type="Order") == 1
    assert value(samples, "sagalog_sagas_compensated_total", saga_type="Order") == 1
    assert (
        value(samples, "sagalog_sagas_dead_lettered_total", saga_type="Order", kind="compensation")
        == 1
    )
    assert (
        value(samples, "sagalog_timeouts_total", saga_type="Order", step="charge", kind="action")
        == 1
    )
    assert (
        value(samples, "sagalog_retries_total", saga_type="Order", step="charge", kind="action")
        == 1
    )
    reserve = {"saga_type": "Order", "step": "reserve", "outcome": "completed"}
    assert value(samples, "sagalog_step_duration_seconds_count", **reserve) == 3
    assert value(samples, "sagalog_step_duration_seconds_sum", **reserve) == 2 + 1 + 0
    assert value(samples, "sagalog_step_duration_seconds_bucket", **reserve, le="1.0") == 2
    charge_timeout = {"saga_type": "Order", "step": "charge", "outcome": "timed_out"}
    assert value(samples, "sagalog_step_duration_seconds_sum", **charge_timeout) == 31
    charge_failed = {"saga_type": "Order", "step": "charge", "outcome": "failed"}
    assert value(samples, "sagalog_step_duration_seconds_sum", **charge_failed) == 5
    undo = {"saga_type": "Order", "step": "reserve", "outcome": "completed"}
    assert value(samples, "sagalog_compensation_duration_seconds_sum", **undo) == 4
    refund = {"saga_type": "Order", "step": "charge", "outcome": "failed"}
    assert value(samples, "sagalog_compensation_duration_seconds_sum", **refund) == 7

    assert follower.drain() == 0  # nothing is counted twice
    assert value(scrape(server), "sagalog_sagas_started_total", saga_type="Order") == 3


def test_operator_actions_are_counted(
    manager: SagaManager, clock: ManualClock, metrics: SagaMetrics, server: MetricsServer
) -> None:
    follower = SagaEventFollower(manager, [metrics.observe], start="beginning")
    _completes, _compensated, dead = _run_three_sagas(manager, clock)
    manager.retry(dead, actor="ops", reason="ledger back")
    running = manager.start("Order", {"n": 4})
    manager.abort(running, actor="ops", reason="customer cancelled")
    manager.handle_compensation_completed(running, "reserve")  # in flight at the abort
    follower.drain()
    samples = scrape(server)
    assert (
        value(samples, "sagalog_operator_actions_total", saga_type="Order", action="retried") == 1
    )
    assert (
        value(samples, "sagalog_operator_actions_total", saga_type="Order", action="aborted") == 1
    )
    # The aborted saga's reserve was in flight: released, then the saga failed.
    assert value(samples, "sagalog_sagas_compensated_total", saga_type="Order") == 2


def test_a_follower_started_at_the_head_counts_only_new_transitions(
    manager: SagaManager, clock: ManualClock, metrics: SagaMetrics, server: MetricsServer
) -> None:
    earlier = manager.start("Order", {"n": 1})
    follower = SagaEventFollower(manager, [metrics.observe])  # start="head"
    manager.handle_step_completed(earlier, "reserve")  # dispatch of reserve was not seen
    manager.start("Order", {"n": 2})
    follower.drain()
    samples = scrape(server)
    assert value(samples, "sagalog_sagas_started_total", saga_type="Order") == 1
    assert (
        "sagalog_step_duration_seconds_count",
        frozenset({"saga_type": "Order", "step": "reserve", "outcome": "completed"}.items()),
    ) not in samples  # the duration of a dispatch it never saw is unknown, not made up


def test_lags_and_stuck_sagas_are_computed_at_scrape_time(
    manager: SagaManager, clock: ManualClock, metrics: SagaMetrics, server: MetricsServer
) -> None:
    relay = CommandRelay(manager, Discard())
    projector = SagaProjector(manager)
    follower = SagaEventFollower(manager, [metrics.observe], start="beginning")
    metrics.watch_relay(relay)
    metrics.watch_lag("projection", projector)
    metrics.watch_lag("observer", follower)
    metrics.watch_stuck(lambda: projector.views.stuck(now=clock.now), StuckReason)
    try:
        ids = _run_three_sagas(manager, clock)
        head = manager.recorder.max_notification_id() or 0
        samples = scrape(server)
        commands = sum(
            isinstance(e, Saga.StepDispatched | Saga.CompensationDispatched)
            for saga_id in ids
            for e in manager.history(saga_id)
        )
        assert 0 < commands < head  # the log holds more than commands
        assert value(samples, "sagalog_relay_lag_events") == commands
        assert value(samples, "sagalog_relay_pending_commands") == sum(
            isinstance(e, Saga.StepDispatched | Saga.CompensationDispatched)
            for saga_id in ids
            for e in manager.history(saga_id)
        )
        assert value(samples, "sagalog_projection_lag_events") == head
        assert value(samples, "sagalog_observer_lag_events") == head
        assert value(samples, "sagalog_stuck_sagas", reason="DEAD_LETTERED") == 0  # views empty

        relay.drain()
        projector.catch_up()
        follower.drain()
        samples = scrape(server)
        # Only commands count as lag: the saga's final events carry none.
        assert value(samples, "sagalog_relay_lag_events") == relay.lag() == 0
        assert value(samples, "sagalog_relay_pending_commands") == 0
        assert value(samples, "sagalog_projection_lag_events") == 0
        assert value(samples, "sagalog_observer_lag_events") == 0
        assert value(samples, "sagalog_stuck_sagas", reason="DEAD_LETTERED") == 1
        assert value(samples, "sagalog_stuck_sagas", reason="NO_PROGRESS") == 0

        manager.start("Order", {"n": 9})
        assert value(scrape(server), "sagalog_relay_pending_commands") == 1
    finally:
        projector.close()


def test_replies_dead_lettered_are_counted_by_error_type(
    metrics: SagaMetrics, server: MetricsServer
) -> None:
    metrics.reply_dead_lettered(ValueError("bad"))
    metrics.reply_dead_lettered(ValueError("worse"))
    metrics.reply_dead_lettered("SagaNotFoundError")
    samples = scrape(server)
    assert value(samples, "sagalog_replies_dead_lettered_total", error="ValueError") == 2
    assert value(samples, "sagalog_replies_dead_lettered_total", error="SagaNotFoundError") == 1


def test_each_instance_owns_its_registry() -> None:
    first, second = SagaMetrics(), SagaMetrics(CollectorRegistry())
    first.started.labels("Order").inc()
    assert (
        first.registry.get_sample_value("sagalog_sagas_started_total", {"saga_type": "Order"}) == 1
    )
    assert (
        second.registry.get_sample_value("sagalog_sagas_started_total", {"saga_type": "Order"})
        is None
    )


def test_a_failing_lag_source_does_not_break_the_endpoint(
    metrics: SagaMetrics, server: MetricsServer
) -> None:
    class Broken:
        def lag(self) -> int:
            raise RuntimeError("database down")

    metrics.watch_lag("relay", Broken())
    metrics.started.labels("Order").inc()
    samples = scrape(server)
    assert ("sagalog_relay_lag_events", frozenset()) not in samples
    assert value(samples, "sagalog_sagas_started_total", saga_type="Order") == 1


def test_every_branch_of_a_parallel_saga_in_flight_is_counted_by_step(
    database_url: str, clock: ManualClock, metrics: SagaMetrics, server: MetricsServer
) -> None:
    trip = SagaManager([TRIP], database_url, clock=clock)
    projector = SagaProjector(trip)
    metrics.watch_steps_in_flight(projector.views.steps_in_flight_counts)
    try:
        one = trip.start("Trip", {"trip": 1})
        trip.handle_step_completed(one, "budget")  # hotel, flight and car in flight
        trip.handle_step_completed(one, "car")
        two = trip.start("Trip", {"trip": 2})
        trip.handle_step_completed(two, "budget")
        done = trip.start("Trip", {"trip": 3})
        for step in ("budget", "hotel", "flight", "car", "confirm"):
            trip.handle_step_completed(done, step)
        projector.catch_up()
        samples = scrape(server)
        in_flight = {
            dict(labels)["step"]: count
            for (name, labels), count in samples.items()
            if name == "sagalog_steps_in_flight"
        }
        assert in_flight == {"hotel": 2, "flight": 2, "car": 1}
        assert {
            dict(labels)["saga_type"]
            for (name, labels) in samples
            if name == "sagalog_steps_in_flight"
        } == {"Trip"}
    finally:
        projector.close()
        trip.close()
