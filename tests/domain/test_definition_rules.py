"""A definition is validated when it is built; each rule's error names the field and the rule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from pydantic import ValidationError

from sagalog.domain import InvalidDefinitionError, RetryPolicy, SagaDefinition, Step
from sagalog.domain.definition import DEFAULT_RETRIABLE_RETRY
from sagalog.testing.strategies import StepKind, definitions, retry_policies


def refused(build: Any, *fragments: str) -> str:
    """``build()`` is refused with an ``InvalidDefinitionError`` holding every fragment.

    ``InvalidDefinitionError`` is a ``ValueError`` and a ``SagalogError``, so callers
    catch bad definitions the same way as every other bad input.
    """
    with pytest.raises(InvalidDefinitionError, match=r"\S") as info:
        build()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_a_definition_needs_at_least_one_step() -> None:
    refused(lambda: SagaDefinition("Order", []), "steps", "at least 1 item")


def test_step_names_must_be_unique() -> None:
    refused(
        lambda: SagaDefinition(
            "Order", [Step(name="pay", action="Payment.Charge"), Step(name="pay", action="X.Y")]
        ),
        "steps",
        "step names must be unique",
        "'pay' appears twice",
    )


def test_step_names_must_not_be_empty() -> None:
    refused(lambda: Step(name="", action="Payment.Charge"), "name", "at least 1 character")


def test_step_names_must_be_identifiers() -> None:
    refused(lambda: Step(name="pay now", action="Payment.Charge"), "name", "match pattern")


def test_a_saga_name_must_not_be_empty() -> None:
    refused(
        lambda: SagaDefinition("", [Step(name="pay", action="Payment.Charge")]),
        "name",
        "at least 1 character",
    )


@pytest.mark.parametrize("field", ["timeout", "compensation_timeout"])
@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-1)])
def test_timeouts_must_be_positive(field: str, value: timedelta) -> None:
    refused(
        lambda: Step(
            name="pay", action="Payment.Charge", compensation="Payment.Refund", **{field: value}
        ),
        field,
        "timeouts must be positive",
    )


def test_a_retry_policy_makes_at_least_one_attempt() -> None:
    refused(lambda: RetryPolicy(max_attempts=0), "max_attempts", "greater than or equal to 1")


def test_the_backoff_factor_is_at_least_one() -> None:
    refused(lambda: RetryPolicy(backoff_factor=0.9), "backoff_factor", "greater than or equal to 1")


def test_the_max_delay_is_capped_at_seven_days() -> None:
    refused(
        lambda: RetryPolicy(max_delay=timedelta(days=7, seconds=1)),
        "max_delay",
        "must be at most 7 days",
    )


def test_the_max_delay_must_be_positive() -> None:
    refused(
        lambda: RetryPolicy(initial_delay=timedelta(0), max_delay=timedelta(0)),
        "max_delay",
        "must be positive",
    )


@pytest.mark.parametrize(
    ("jitter", "rule"),
    [(-0.1, "greater than or equal to 0"), (1.01, "less than or equal to 1")],
)
def test_jitter_lies_between_zero_and_one(jitter: float, rule: str) -> None:
    refused(lambda: RetryPolicy(jitter=jitter), "jitter", rule)


def test_the_initial_delay_must_not_be_negative() -> None:
    refused(
        lambda: RetryPolicy(initial_delay=timedelta(seconds=-1)),
        "initial_delay",
        "must not be negative",
    )


def test_the_initial_delay_must_not_exceed_the_max_delay() -> None:
    refused(
        lambda: RetryPolicy(initial_delay=timedelta(minutes=2), max_delay=timedelta(minutes=1)),
        "initial_delay must not exceed max_delay",
    )


def test_the_bounds_themselves_are_accepted() -> None:
    policy = RetryPolicy(
        max_attempts=1,
        initial_delay=timedelta(0),
        backoff_factor=1.0,
        max_delay=timedelta(days=7),
        jitter=1.0,
    )
    assert (policy.max_attempts, policy.backoff_factor, policy.jitter) == (1, 1.0, 1.0)
    assert RetryPolicy(jitter=0.0).jitter == 0.0


def test_a_retriable_step_may_not_have_a_compensation() -> None:
    refused(
        lambda: Step(name="mail", action="Mail.Send", compensation="Mail.Recall", retriable=True),
        "step 'mail' is retriable, so it is never compensated",
    )


def test_the_pivot_rule_refuses_a_retriable_step_before_a_compensatable_one() -> None:
    refused(
        lambda: SagaDefinition(
            "Order",
            [
                Step(name="reserve", action="Inventory.Reserve", compensation="Inventory.Release"),
                Step(name="mail", action="Mail.Send", retriable=True),
                Step(name="charge", action="Payment.Charge", compensation="Payment.Refund"),
            ],
        ),
        "retriable step 'mail' (position 2) stands before compensatable step 'charge'",
        "the pivot rule",
    )


def test_the_pivot_rule_refuses_a_step_that_is_not_retriable_after_a_retriable_one() -> None:
    # Past the pivot a saga only goes forward: a failing plain step there would
    # otherwise compensate steps before the pivot.
    refused(
        lambda: SagaDefinition(
            "Order",
            [
                Step(name="reserve", action="Inventory.Reserve", compensation="Inventory.Release"),
                Step(name="mail", action="Mail.Send", retriable=True),
                Step(name="archive", action="Archive.Store"),
            ],
        ),
        "step 'archive' (position 3) follows retriable step 'mail' but is not retriable",
        "the pivot rule",
    )


def test_the_pivot_rule_accepts_retriable_steps_after_the_last_compensatable_one() -> None:
    definition = SagaDefinition(
        "Order",
        [
            Step(name="reserve", action="Inventory.Reserve", compensation="Inventory.Release"),
            Step(name="ship", action="Shipping.Create"),
            Step(name="mail", action="Mail.Send", retriable=True),
            Step(name="invoice", action="Billing.Invoice", retriable=True),
        ],
    )
    assert definition.step_names == ("reserve", "ship", "mail", "invoice")
    assert [s.retriable for s in definition.steps] == [False, False, True, True]


def test_a_retriable_step_gets_the_retriable_retry_policy_by_default() -> None:
    assert Step(name="mail", action="Mail.Send", retriable=True).retry == DEFAULT_RETRIABLE_RETRY
    assert Step(name="pay", action="Payment.Charge").retry.max_attempts == 1


def test_definitions_are_immutable() -> None:
    definition = SagaDefinition("Order", [Step(name="pay", action="Payment.Charge")])
    with pytest.raises(ValidationError, match="frozen"):
        definition.name = "Other"  # type: ignore[misc]


def test_unknown_fields_are_refused() -> None:
    refused(
        lambda: Step(**{"name": "pay", "action": "Payment.Charge", "compensate": "Payment.Refund"}),
        "compensate",
        "Extra inputs are not permitted",
    )


@given(definitions())
def test_generated_definitions_obey_the_pivot_rule(definition: SagaDefinition) -> None:
    """The strategies themselves only produce what the rules allow."""
    last_compensatable = max(
        (i for i, s in enumerate(definition.steps) if s.compensatable), default=-1
    )
    assert not any(s.retriable for s in definition.steps[: last_compensatable + 1])
    assert 1 <= len(definition.steps) <= 8
    assert len(set(definition.step_names)) == len(definition.steps)


@given(retry_policies())
def test_generated_retry_policies_stay_small(policy: RetryPolicy) -> None:
    assert 1 <= policy.max_attempts <= 4
    assert timedelta(0) <= policy.initial_delay <= policy.max_delay <= timedelta(minutes=2)


def test_step_kinds_name_the_three_sorts_of_step() -> None:
    assert [kind.value for kind in StepKind] == ["compensatable", "plain", "retriable"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "Invalid JSON"),
        ('{"name": "Order", "steps": [], "version": 1}', "steps"),
        ('{"name": "Order", "steps": [{"name": "pay", "action": "P.C"}], "version": 0}', "version"),
    ],
)
def test_from_json_refuses_bad_json_with_the_typed_error(text: str, fragment: str) -> None:
    message = refused(lambda: SagaDefinition.from_json(text), fragment)
    assert message.startswith("invalid SagaDefinition: ")
