"""The one loop behind every follower: it backs off on retried errors, idles, and stops promptly."""

from __future__ import annotations

import threading
import time

import pytest

from sagalog.process.store.loops import Backoff, run_until_stopped


def test_backoff_doubles_from_initial_up_to_the_maximum_and_starts_again_after_reset() -> None:
    backoff = Backoff(0.05, 0.3)
    assert [backoff.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert backoff.failures == 5
    backoff.reset()
    assert backoff.next() == 0.05


def test_backoff_without_a_maximum_keeps_doubling() -> None:
    backoff = Backoff(1.0)
    assert [backoff.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Backoff(-1.0)


def test_retried_errors_are_reported_with_growing_delays_and_reset_after_a_success() -> None:
    stop = threading.Event()
    outcomes: list[object] = [OSError("a"), OSError("b"), OSError("c"), 1, OSError("d")]
    reported: list[tuple[str, float]] = []

    def step() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, int)
        return outcome

    def on_error(exc: BaseException, delay: float) -> None:
        reported.append((str(exc), delay))
        if not outcomes:
            stop.set()

    run_until_stopped(
        step,
        stop,
        interval=10.0,
        backoff=Backoff(0.001, 0.003),
        retry_on=(OSError,),
        on_error=on_error,
    )
    assert reported == [("a", 0.001), ("b", 0.002), ("c", 0.003), ("d", 0.001)]


def test_without_a_backoff_every_retry_waits_the_interval() -> None:
    stop = threading.Event()
    delays: list[float] = []

    def step() -> int:
        raise OSError("down")

    def on_error(_exc: BaseException, delay: float) -> None:
        delays.append(delay)
        if len(delays) == 3:
            stop.set()

    run_until_stopped(step, stop, interval=0.001, retry_on=(OSError,), on_error=on_error)
    assert delays == [0.001, 0.001, 0.001]


def test_an_error_outside_retry_on_propagates_at_once() -> None:
    calls = 0

    def step() -> int:
        nonlocal calls
        calls += 1
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        run_until_stopped(step, threading.Event(), interval=0.001, retry_on=(OSError,))
    assert calls == 1


def test_setting_stop_ends_an_idle_wait_promptly() -> None:
    stop = threading.Event()
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0  # nothing to do: the loop waits its (long) interval

    loop = threading.Thread(
        target=run_until_stopped, args=(step, stop), kwargs={"interval": 60.0}, daemon=True
    )
    loop.start()
    while steps == 0:
        time.sleep(0.001)
    began = time.monotonic()
    stop.set()
    loop.join(5.0)
    assert not loop.is_alive()
    assert time.monotonic() - began < 1.0
    assert steps == 1


def test_setting_stop_ends_a_backoff_wait_promptly() -> None:
    stop = threading.Event()
    failed = threading.Event()

    def step() -> int:
        raise OSError("down")

    loop = threading.Thread(
        target=run_until_stopped,
        args=(step, stop),
        kwargs={
            "interval": 0.01,
            "backoff": Backoff(60.0),
            "retry_on": (OSError,),
            "on_error": lambda _exc, _delay: failed.set(),
        },
        daemon=True,
    )
    loop.start()
    assert failed.wait(5.0)
    began = time.monotonic()
    stop.set()
    loop.join(5.0)
    assert not loop.is_alive()
    assert time.monotonic() - began < 1.0


def test_a_step_that_did_work_runs_again_without_waiting_and_idle_replaces_the_wait() -> None:
    stop = threading.Event()
    work = [3, 2, 1, 0]
    idled: list[float] = []

    def step() -> int:
        return work.pop(0)

    def idle(seconds: float) -> None:
        idled.append(seconds)
        stop.set()

    run_until_stopped(step, stop, interval=60.0, idle=idle)
    assert work == []
    assert idled == [60.0]


def test_a_stop_set_before_the_loop_starts_runs_no_step() -> None:
    stop = threading.Event()
    stop.set()
    steps: list[int] = []

    def step() -> int:
        steps.append(1)
        return 1

    run_until_stopped(step, stop, interval=0.01)
    assert steps == []
