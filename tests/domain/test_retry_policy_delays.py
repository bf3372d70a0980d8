"""Retry delays grow by the backoff factor, stop at the cap, and jitter deterministically."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from sagalog.domain import RetryPolicy
from sagalog.testing.strategies import retry_policies


def test_delays_grow_by_the_backoff_factor_up_to_the_cap() -> None:
    policy = RetryPolicy(
        max_attempts=6,
        initial_delay=timedelta(seconds=1),
        backoff_factor=2.0,
        max_delay=timedelta(seconds=5),
    )
    delays = [policy.delay_after(attempt, "key").total_seconds() for attempt in range(1, 6)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_zero_initial_delay_retries_at_once() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=timedelta(0))
    assert policy.delay_after(1, "key") == timedelta(0)
    assert policy.delay_after(2, "key") == timedelta(0)


def test_jitter_is_the_same_for_the_same_key_and_differs_between_keys() -> None:
    policy = RetryPolicy(
        max_attempts=3,
        initial_delay=timedelta(seconds=10),
        max_delay=timedelta(seconds=10),
        jitter=0.5,
    )
    assert policy.delay_after(1, "command-a") == policy.delay_after(1, "command-a")
    assert policy.delay_after(1, "command-a") != policy.delay_after(1, "command-b")


def test_without_jitter_the_key_does_not_matter() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=timedelta(seconds=3))
    assert policy.delay_after(1, "a") == policy.delay_after(1, "b") == timedelta(seconds=3)


@given(retry_policies(), st.integers(1, 10), st.text(max_size=20))
def test_jitter_only_shortens_a_delay_by_at_most_its_fraction(
    policy: RetryPolicy, attempt: int, key: str
) -> None:
    base = min(
        policy.max_delay.total_seconds(),
        policy.initial_delay.total_seconds() * policy.backoff_factor ** (attempt - 1),
    )
    delay = policy.delay_after(attempt, key).total_seconds()
    assert base * (1 - policy.jitter) - 1e-6 <= delay <= base + 1e-6
    assert delay <= policy.max_delay.total_seconds()
